# bash workload (same protocol as wl.h): a shell variable counter and an array.
d=$1
n=0
arr=(alpha beta gamma delta)
mypid=$$
echo $$ > "$d/ready.tmp" && mv "$d/ready.tmp" "$d/ready"
while [ ! -e "$d/go" ]; do
  n=$((n + 1))
  : "${arr[0]}"
done
fail=""
[ "$mypid" = "$$" ] || fail="pid changed"
[ "${arr[*]}" = "alpha beta gamma delta" ] || fail="array changed: ${arr[*]}"
[ "$n" -gt 5 ] || fail="counter too small: $n"
if [ -z "$fail" ]; then printf 'PASS\nn=%s\n' "$n" > "$d/result.tmp"; else printf 'FAIL: %s\n' "$fail" > "$d/result.tmp"; fi
mv "$d/result.tmp" "$d/result"
[ -z "$fail" ]
