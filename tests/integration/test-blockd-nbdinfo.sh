#!/usr/bin/env bash
# blockd seen by nbdinfo: the advertised flags, size, block sizes and
# base:allocation (nbdinfo --json); read-only with --readonly and ,readonly;
# several exports with descriptions (nbdinfo --list); an unknown export fails.
. "$SRCDIR/tests/lib.sh"
require nbdinfo

truncate -s 64M "$TMP/disk.img"
truncate -s 16M "$TMP/a.img"
truncate -s 8M "$TMP/b.img"

# json_check JSONFILE PYTHON-EXPR...: each expression over `e` (the first
# export) and `j` (the whole document) must be true; prints what failed.
json_check() {
  local f=$1; shift
  "$PY" - "$f" "$@" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
e = j["exports"][0]
bad = [x for x in sys.argv[2:] if not eval(x)]
for x in bad:
    print("nbdinfo check failed: %s" % x, file=sys.stderr)
if bad:
    print(json.dumps(j, indent=1), file=sys.stderr)
sys.exit(1 if bad else 0)
PYEOF
}

restart() {
  if [ -n "${BLOCKD_PID:-}" ]; then stop_blockd; fi
  rm -f "$TMP/nbd.sock"
  start_blockd "$@"
}

# Read-write default export.
restart "$TMP/disk.img"
nbdinfo --json "$NBD_URI" > "$TMP/info.json" || fail "nbdinfo --json failed"
json_check "$TMP/info.json" \
  'j["protocol"] == "newstyle-fixed"' \
  'j["structured"] is True' \
  'len(j["exports"]) == 1' \
  'e["export-name"] == ""' \
  'e["export-size"] == 64 * 1024 * 1024' \
  'e["is_read_only"] is False' \
  'e["can_flush"] is True' 'e["can_fua"] is True' 'e["can_trim"] is True' \
  'e["can_zero"] is True' 'e["can_fast_zero"] is True' 'e["can_cache"] is True' \
  'e["can_multi_conn"] is True' 'e["can_df"] is True' \
  'e["is_rotational"] is False' \
  'e["block_size_minimum"] == 1' \
  'e["block_size_preferred"] == 4096' \
  'e["block_size_maximum"] == 32 * 1024 * 1024' \
  '"base:allocation" in e["contexts"]' \
  || fail "read-write export: wrong nbdinfo --json"

# An empty sparse file maps as one hole.
nbdinfo --map "$NBD_URI" > "$TMP/map" || fail "nbdinfo --map failed"
read -r off len typ rest < "$TMP/map"
[ "$off $len $typ" = "0 67108864 3" ] || { cat "$TMP/map" >&2; fail "map of an empty file: $(cat "$TMP/map")"; }

# Unknown export: nbdinfo fails and says so.
if nbdinfo "nbd+unix:///nosuch?socket=$NBD_SOCK" > "$TMP/out" 2>&1; then
  fail "nbdinfo on an unknown export succeeded"
fi
grep -qi "nosuch\|no such\|unknown\|not found" "$TMP/out" || { cat "$TMP/out" >&2; fail "unknown export: no telling message"; }

# --readonly.
restart --readonly "$TMP/disk.img"
nbdinfo --json "$NBD_URI" > "$TMP/info.json" || fail "nbdinfo --json (readonly) failed"
json_check "$TMP/info.json" \
  'e["is_read_only"] is True' \
  'e["export-size"] == 64 * 1024 * 1024' \
  '"base:allocation" in e["contexts"]' \
  || fail "--readonly: wrong nbdinfo --json"

# Several exports, one read-only, with descriptions.
restart --export "a=$TMP/a.img" --export "b=$TMP/b.img,readonly"
nbdinfo --json --list "$NBD_URI" > "$TMP/list.json" || fail "nbdinfo --list failed"
json_check "$TMP/list.json" \
  'sorted(x["export-name"] for x in j["exports"]) == ["a", "b"]' \
  '{x["export-name"]: x["export-size"] for x in j["exports"]} == {"a": 16 << 20, "b": 8 << 20}' \
  '{x["export-name"]: x["is_read_only"] for x in j["exports"]} == {"a": False, "b": True}' \
  'all(isinstance(x.get("description"), str) and x["description"] for x in j["exports"])' \
  'all("base:allocation" in x["contexts"] for x in j["exports"])' \
  'all(x["block_size_maximum"] == 32 << 20 for x in j["exports"])' \
  || fail "several exports: wrong nbdinfo --json --list"
nbdinfo --list "$NBD_URI" > "$TMP/list.txt" || fail "nbdinfo --list (text) failed"
grep -q '^export="a":' "$TMP/list.txt" && grep -q '^export="b":' "$TMP/list.txt" \
  || { cat "$TMP/list.txt" >&2; fail "nbdinfo --list does not show a and b"; }
[ "$(grep -c 'description:' "$TMP/list.txt")" -eq 2 ] \
  || { cat "$TMP/list.txt" >&2; fail "nbdinfo --list does not show two descriptions"; }
nbdinfo --json "nbd+unix:///b?socket=$NBD_SOCK" > "$TMP/b.json" || fail "nbdinfo export b failed"
json_check "$TMP/b.json" 'e["export-name"] == "b"' 'e["is_read_only"] is True' \
  || fail "export b: wrong nbdinfo --json"

# A lone FILE is the default export "", beside named ones.
restart --export "a=$TMP/a.img" "$TMP/disk.img"
nbdinfo --json --list "$NBD_URI" > "$TMP/list.json" || fail "nbdinfo --list (FILE + --export) failed"
json_check "$TMP/list.json" \
  '{x["export-name"]: x["export-size"] for x in j["exports"]} == {"": 64 << 20, "a": 16 << 20}' \
  || fail "FILE beside --export: wrong exports"

stop_blockd
echo PASS
