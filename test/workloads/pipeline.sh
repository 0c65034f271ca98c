# A shell pipeline of real programs (same protocol as wl.h, no go needed): bash runs
# `yes | head -c N | sha256sum` and writes the digest as its result when the stream is done.
d=$1
n=${2:-600000000}
echo $$ > "$d/ready.tmp" && mv "$d/ready.tmp" "$d/ready"
yes 0123456789abcdef | head -c "$n" | sha256sum > "$d/out"
printf 'PASS\n%s\n' "$(cut -d' ' -f1 "$d/out")" > "$d/result.tmp"
mv "$d/result.tmp" "$d/result"
