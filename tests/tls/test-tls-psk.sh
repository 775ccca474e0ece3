#!/usr/bin/env bash
# TLS with pre-shared keys (--tls-psk, psktool's USERNAME:HEXKEY lines):
# nbdinfo, nbdcopy and qemu-img (tls-creds-psk) connect and move data that
# reads back identically from the file; a wrong key and an unknown username
# are refused with a log line. Then the TLS command line: usage errors exit 2
# with one line, and so do credentials that cannot be loaded.
. "$SRCDIR/tests/tls/tlslib.sh"
require psktool nbdinfo nbdcopy qemu-img

truncate -s 8M "$TMP/disk.img"
head -c 8M /dev/urandom > "$TMP/src.img"
mkdir -m 0700 "$TMP/keys" "$TMP/wrong"
psktool -u alice -p "$TMP/keys/keys.psk" > /dev/null
psktool -u bob -p "$TMP/keys/keys.psk" > /dev/null
psktool -u alice -p "$TMP/wrong/keys.psk" > /dev/null
psktool -u mallory -p "$TMP/mallory.psk" > /dev/null

start_tls --tls-psk="$TMP/keys/keys.psk" "$TMP/disk.img"
uri() { echo "nbds://$1@$HOSTPORT/?tls-psk-file=$2"; }
[ "$(nbdinfo --size "$(uri alice "$TMP/keys/keys.psk")")" = $((8 << 20)) ] || fail "nbdinfo with PSK failed"
[ "$(served)" -eq 1 ] || fail "blockd -v logged $(served) clients served, expected 1 (refused() relies on it)"
nbdcopy "$TMP/src.img" "$(uri bob "$TMP/keys/keys.psk")" || fail "nbdcopy into blockd with PSK failed"
qemu-img compare --object "tls-creds-psk,id=tls0,dir=$TMP/keys,username=alice,endpoint=client" \
  --image-opts "driver=file,filename=$TMP/src.img" \
  "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$PORT,tls-creds=tls0" > /dev/null ||
  fail "qemu-img compare with PSK failed"
refused "wrong key" nbdinfo --size "$(uri alice "$TMP/wrong/keys.psk")"
logged "PSK username 'alice'"
refused "qemu-img with a wrong key" qemu-img info \
  --object "tls-creds-psk,id=tls0,dir=$TMP/wrong,username=alice,endpoint=client" --image-opts \
  "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$PORT,tls-creds=tls0"
refused "unknown username" nbdinfo --size "$(uri mallory "$TMP/mallory.psk")"
logged "unknown PSK username 'mallory'"
refused "plaintext client" nbdinfo --size "nbd://$HOSTPORT/"
stop_blockd
cmp "$TMP/src.img" "$TMP/disk.img" || fail "the file differs from what nbdcopy wrote with PSK"

# usage_error WANT ARGS...: blockd ARGS exits 2 with one line containing WANT.
usage_error() {
  local want=$1 rc=0; shift
  timeout 10 "$BLOCKD" --unix "$TMP/u.sock" "$@" > /dev/null 2> "$TMP/err" || rc=$?
  [ "$rc" -eq 2 ] || { cat "$TMP/err" >&2; fail "blockd $*: exit $rc, expected 2"; }
  grep -qF -- "$want" "$TMP/err" || { cat "$TMP/err" >&2; fail "blockd $*: no '$want' in the message"; }
  [ "$(grep -vc '^blockd: warning' "$TMP/err")" -eq 1 ] || { cat "$TMP/err" >&2; fail "blockd $*: more than one line"; }
  [ ! -e "$TMP/u.sock" ] || fail "blockd $*: left its socket behind"
}
d=$TMP/disk.img
usage_error "expected off, on or require" --tls=maybe "$d"
usage_error "needs --tls-certificates DIR or --tls-psk FILE" --tls=require "$d"
usage_error "needs --tls-certificates DIR or --tls-psk FILE" --tls=on "$d"
usage_error "give one" --tls-certificates="$CERTS/server" --tls-psk="$TMP/keys/keys.psk" "$d"
usage_error "--tls-verify-peer needs --tls-certificates" --tls-psk="$TMP/keys/keys.psk" --tls-verify-peer "$d"
usage_error "--tls=off with TLS credentials" --tls=off --tls-psk="$TMP/keys/keys.psk" "$d"
usage_error "no NBD export" --tls-psk="$TMP/keys/keys.psk" --vhost-user-blk "$TMP/v.sock=$d"
usage_error "$TMP/none/server-cert.pem: No such file" --tls-certificates="$TMP/none" "$d"
# --tls-verify-peer without ca-cert.pem to check clients against.
mkdir "$TMP/noca"
cp "$CERTS/server/server-cert.pem" "$CERTS/server/server-key.pem" "$TMP/noca/"
usage_error "$TMP/noca/ca-cert.pem: No such file" --tls-certificates="$TMP/noca" --tls-verify-peer "$d"
usage_error "$TMP/nokeys.psk: No such file" --tls-psk="$TMP/nokeys.psk" "$d"
# A key that is not its certificate's.
mkdir "$TMP/mismatch"
cp "$CERTS/server/server-cert.pem" "$TMP/mismatch/"
cp "$CERTS/client/client-key.pem" "$TMP/mismatch/server-key.pem"
usage_error "server-key.pem" --tls-certificates="$TMP/mismatch" "$d"
# Malformed PSK files: the line and what is wrong with it.
bad_psk() { printf '%b' "$2" > "$TMP/bad.psk"; usage_error "$1" --tls-psk="$TMP/bad.psk" "$d"; }
bad_psk "bad.psk:1: expected USERNAME:HEXKEY" 'no colon here\n'
bad_psk "bad.psk:2: expected USERNAME:HEXKEY" 'alice:00ff\n:00ff\n'
bad_psk "bad.psk:1: the key must be an even number of hex digits" 'alice:abc\n'
bad_psk "bad.psk:1: the key must be hex digits" 'alice:zz\n'
bad_psk "bad.psk:3: username given twice" 'alice:00\n\nalice:11\n'
bad_psk "bad.psk:1: line too long" "alice:$(head -c 2000 /dev/zero | tr '\0' 'a')\n"
bad_psk "no keys in it" '\n\n'
# A world-readable key file is served, with a warning.
chmod 644 "$TMP/keys/keys.psk"
start_tls --tls-psk="$TMP/keys/keys.psk" "$TMP/disk.img"
logged "warning: $TMP/keys/keys.psk is readable by every user"
stop_blockd
echo PASS
