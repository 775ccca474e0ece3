#!/usr/bin/env bash
# mkcerts.sh DIR: X.509 credentials for the TLS tests, made with certtool
# (ECDSA keys: milliseconds each). Every folder is in the layout its user
# reads: blockd and nbdkit the server's, libnbd and QEMU a client's.
#
#   DIR/server/     ca-cert.pem server-cert.pem server-key.pem
#   DIR/server-crl/ the same and ca-crl.pem, which revokes DIR/revoked's certificate
#   DIR/client/     ca-cert.pem client-cert.pem client-key.pem  (a good client)
#   DIR/nocert/     ca-cert.pem                                 (no client certificate)
#   DIR/revoked/    like client/, its certificate revoked
#   DIR/foreign/    trusts our CA; its client certificate is from an impostor CA
#   DIR/wrongca/    trusts only the impostor CA (so not our server)
#
# The server certificate names localhost, 127.0.0.1 and ::1.
set -euo pipefail
dir=${1:?usage: mkcerts.sh DIR}
command -v certtool >/dev/null || { echo "mkcerts.sh: certtool not installed (gnutls-bin)" >&2; exit 77; }
mkdir -p "$dir"/{ca,other,server,server-crl,client,nocert,revoked,foreign,wrongca}
cd "$dir"

key() { certtool --generate-privkey --key-type=ecdsa --outfile "$1" 2>/dev/null; chmod 600 "$1"; }
# cert OUT KEY CA-DIR TEMPLATE-LINES...: a certificate for KEY signed by CA-DIR.
cert() {
  local out=$1 k=$2 ca=$3; shift 3
  printf '%s\n' "$@" 'expiration_days = 2' > "$out.info"
  certtool --generate-certificate --load-ca-certificate "$ca/ca-cert.pem" \
    --load-ca-privkey "$ca/ca-key.pem" --load-privkey "$k" --template "$out.info" \
    --outfile "$out" 2>/dev/null
  rm -f "$out.info"
}
# ca DIR NAME: a self-signed certificate authority in DIR.
ca() {
  key "$1/ca-key.pem"
  printf '%s\n' "cn = $2" ca cert_signing_key crl_signing_key 'expiration_days = 2' > "$1/ca.info"
  certtool --generate-self-signed --load-privkey "$1/ca-key.pem" --template "$1/ca.info" \
    --outfile "$1/ca-cert.pem" 2>/dev/null
}
client_lines=('cn = blockd test client' tls_www_client encryption_key signing_key)

ca ca "blockd test CA"
# Another CA with the same name: an impostor. Clients then present its
# certificates (GnuTLS picks a certificate by its issuer's name), so blockd's
# own check of the signature is what refuses them.
ca other "blockd test CA"

key server/server-key.pem
cert server/server-cert.pem server/server-key.pem ca 'cn = localhost' 'dns_name = localhost' \
  'ip_address = 127.0.0.1' 'ip_address = ::1' tls_www_server encryption_key signing_key
cp ca/ca-cert.pem server/

for d in client revoked; do
  key $d/client-key.pem
  cert $d/client-cert.pem $d/client-key.pem ca "${client_lines[@]}"
  cp ca/ca-cert.pem $d/
done
cp ca/ca-cert.pem nocert/

key foreign/client-key.pem
cert foreign/client-cert.pem foreign/client-key.pem other "${client_lines[@]}"
cp ca/ca-cert.pem foreign/

key wrongca/client-key.pem
cert wrongca/client-cert.pem wrongca/client-key.pem other "${client_lines[@]}"
cp other/ca-cert.pem wrongca/

cp server/* server-crl/
printf '%s\n' 'crl_next_update = 2' > crl.info
certtool --generate-crl --load-ca-privkey ca/ca-key.pem --load-ca-certificate ca/ca-cert.pem \
  --load-certificate revoked/client-cert.pem --template crl.info \
  --outfile server-crl/ca-crl.pem 2>/dev/null
rm -f crl.info
