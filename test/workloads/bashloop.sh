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
if [ -z "$fail" ]; then printf -v res 'PASS\nn=%s' "$n"; else res="FAIL: $fail"; fi
# the result on stdout too, before DIR/result appears (a test may read it from a pipe)
printf '%s\n' "$res"
printf '%s\n' "$res" > "$d/result.tmp"
mv "$d/result.tmp" "$d/result"
[ -z "$fail" ]
