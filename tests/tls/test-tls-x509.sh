#!/usr/bin/env bash
# TLS with X.509 certificates over TCP (--tls-certificates, nbdkit's layout):
# nbdinfo, nbdcopy, qemu-img and qemu-io connect with TLS, and what they write
# reads back identically from the file; a client that trusts another CA and
# a plaintext client are refused; --tls=on serves both kinds. With
# --tls-verify-peer a client certificate signed by ca-cert.pem gets in; none,
# one of another CA, or one that ca-crl.pem revokes does not, each with a log
# line saying why. nbdkit and qemu-storage-daemon, as references, serve from
# the same directory.
. "$SRCDIR/tests/tls/tlslib.sh"
require nbdinfo nbdcopy qemu-img qemu-io nbdkit qemu-storage-daemon

truncate -s 16M "$TMP/disk.img"
head -c 16M /dev/urandom > "$TMP/src.img"
# qemu_opts DIR: --object and --image-opts for QEMU's NBD client over TLS,
# with the client credentials in DIR.
qemu_creds() { echo "tls-creds-x509,id=tls0,dir=$1,endpoint=client"; }
qemu_nbd() { echo "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$PORT,tls-creds=tls0"; }

# Credentials alone mean --tls=require.
start_tls --tls-certificates="$CERTS/server" "$TMP/disk.img"
uri="nbds://$HOSTPORT/?tls-certificates=$CERTS/client"
nbdinfo --json "$uri" > "$TMP/info.json" || fail "nbdinfo over TLS failed"
"$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); e=j["exports"][0]; sys.exit(not (j["TLS"] and e["export-size"] == 16 << 20))' \
  "$TMP/info.json" || { cat "$TMP/info.json" >&2; fail "nbdinfo over TLS: not TLS, or the wrong size"; }
[ "$(served)" -eq 1 ] || fail "blockd -v logged $(served) clients served, expected 1 (refused() relies on it)"

# Data through the pump both ways, several connections at once (nbdcopy).
nbdcopy --connections=4 "$TMP/src.img" "$uri" || fail "nbdcopy into blockd over TLS failed"
nbdcopy --connections=4 "$uri" "$TMP/back.img" || fail "nbdcopy out of blockd over TLS failed"
cmp "$TMP/src.img" "$TMP/back.img" || fail "nbdcopy over TLS: what came back differs"
qemu-img compare --object "$(qemu_creds "$CERTS/client")" --image-opts \
  "driver=file,filename=$TMP/src.img" "$(qemu_nbd)" >/dev/null || fail "qemu-img compare over TLS"
qemu-io --object "$(qemu_creds "$CERTS/client")" --image-opts "$(qemu_nbd)" \
  -c "write -P 0x5a 1M 3M" -c "write -z 8M 1M" -c "flush" -c "read -P 0x5a 1M 3M" -c "read -P 0 8M 1M" \
  > "$TMP/qemu-io.out" || { cat "$TMP/qemu-io.out" >&2; fail "qemu-io over TLS failed"; }
grep -q "Pattern verification failed" "$TMP/qemu-io.out" && fail "qemu-io over TLS read back the wrong data"

# Turned away: a client that trusts another CA, and a plaintext one, which
# gets nothing (nbdinfo asks with GO; test-tls-options checks every option).
refused "client trusting another CA" nbdinfo --size "nbds://$HOSTPORT/?tls-certificates=$CERTS/wrongca"
logged "the client broke off the TLS handshake"
refused "plaintext client" nbdinfo --size "nbd://$HOSTPORT/"
grep -q "TLS" "$TMP/refused.out" || { cat "$TMP/refused.out" >&2; fail "plaintext client not told TLS is required"; }
stop_blockd

# The file holds what went over TLS: src.img with qemu-io's two writes.
cp "$TMP/src.img" "$TMP/want.img"
head -c 3M /dev/zero | tr '\0' '\132' | dd of="$TMP/want.img" bs=1M seek=1 conv=notrunc status=none
head -c 1M /dev/zero | dd of="$TMP/want.img" bs=1M seek=8 conv=notrunc status=none
cmp "$TMP/want.img" "$TMP/disk.img" || fail "the file differs from what was written over TLS"

# The line at start says TLS is required, and --print-uri prints nbds://,
# which works once the client adds its certificates.
"$BLOCKD" --listen 127.0.0.1:0 --print-uri --tls-certificates="$CERTS/server" \
  "$TMP/disk.img" > "$TMP/uri" 2> "$TMP/start.log" &
uri_pid=$!
track $uri_pid
for _ in $(seq 100); do [ -s "$TMP/uri" ] && break; sleep 0.05; done
[[ $(cat "$TMP/uri") =~ ^nbds://127\.0\.0\.1:[1-9][0-9]*/$ ]] || fail "--print-uri with TLS printed '$(cat "$TMP/uri")'"
[ "$(nbdinfo --size "$(cat "$TMP/uri")?tls-certificates=$CERTS/client")" = $((16 << 20)) ] ||
  fail "nbdinfo on the printed nbds:// URI failed"
grep -q "serving export '' (raw, read-write) on 127.0.0.1:[0-9]*, TLS required (X.509)$" "$TMP/start.log" ||
  { cat "$TMP/start.log" >&2; fail "the line at start does not say TLS is required"; }
kill $uri_pid; wait $uri_pid || fail "blockd --print-uri exited $? on SIGTERM"

# --tls=on: plaintext and TLS clients alike, each told which it got.
start_tls --tls=on --tls-certificates="$CERTS/server" "$TMP/disk.img"
tls_of() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["TLS"])' "$1"; }
nbdinfo --json "nbd://$HOSTPORT/" > "$TMP/plain.json" || fail "--tls=on: a plaintext client was refused"
nbdinfo --json "nbds://$HOSTPORT/?tls-certificates=$CERTS/client" > "$TMP/tls.json" ||
  fail "--tls=on: a TLS client was refused"
[ "$(tls_of "$TMP/plain.json")/$(tls_of "$TMP/tls.json")" = False/True ] ||
  fail "--tls=on: TLS $(tls_of "$TMP/plain.json") for nbd://, $(tls_of "$TMP/tls.json") for nbds://"
stop_blockd

# --tls-verify-peer, with a revocation list.
start_tls --tls=require --tls-certificates="$CERTS/server-crl" --tls-verify-peer "$TMP/disk.img"
nbdinfo --size "nbds://$HOSTPORT/?tls-certificates=$CERTS/client" > /dev/null ||
  fail "--tls-verify-peer: a client with a good certificate was refused"
qemu-img info --object "$(qemu_creds "$CERTS/client")" --image-opts "$(qemu_nbd)" > /dev/null ||
  fail "--tls-verify-peer: qemu-img with a good certificate was refused"
refused "client without a certificate" nbdinfo --size "nbds://$HOSTPORT/?tls-certificates=$CERTS/nocert"
logged "Certificate is required"
refused "client certificate of another CA" nbdinfo --size "nbds://$HOSTPORT/?tls-certificates=$CERTS/foreign"
logged "client certificate refused: The certificate is NOT trusted"
refused "revoked client certificate" nbdinfo --size "nbds://$HOSTPORT/?tls-certificates=$CERTS/revoked"
logged "The certificate chain is revoked"
refused "qemu-img without a certificate" \
  qemu-img info --object "$(qemu_creds "$CERTS/nocert")" --image-opts "$(qemu_nbd)"
stop_blockd

# The layout is the reference servers' own: nbdkit and qemu-storage-daemon
# serve from the same directory, and the same clients get in or not.
# reference NAME CMD...: runs a server in the background on $PORT.
reference() {
  local name=$1; shift
  "$@" 2>>"$TMP/$name.log" &
  track $!
  for _ in $(seq 100); do
    nbdinfo --size "nbds://$HOSTPORT/?tls-certificates=$CERTS/client" > /dev/null 2>&1 && return 0
    kill -0 $! 2>/dev/null || { cat "$TMP/$name.log" >&2; fail "$name exited at start"; }
    sleep 0.1
  done
  fail "$name: a client with a good certificate was refused"
}
PORT=$(free_port); HOSTPORT=127.0.0.1:$PORT
reference nbdkit nbdkit -f -p "$PORT" -i 127.0.0.1 --tls=require --tls-certificates="$CERTS/server" \
  --tls-verify-peer file "$TMP/disk.img"
nbdinfo --size "nbds://$HOSTPORT/?tls-certificates=$CERTS/nocert" > /dev/null 2>&1 &&
  fail "nbdkit --tls-verify-peer let in a client without a certificate"
PORT=$(free_port); HOSTPORT=127.0.0.1:$PORT
reference qemu-storage-daemon qemu-storage-daemon \
  --object "tls-creds-x509,id=tls0,dir=$CERTS/server,endpoint=server,verify-peer=on" \
  --blockdev "driver=file,filename=$TMP/disk.img,node-name=disk" \
  --nbd-server "addr.type=inet,addr.host=127.0.0.1,addr.port=$PORT,tls-creds=tls0" \
  --export type=nbd,id=exp,node-name=disk,name=
echo PASS
