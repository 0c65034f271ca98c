# mntct MODE (same protocol as wl.h): a busybox container built in DIR itself (DIR is its root: a bind
# of itself, pivot_root into it, the old root detached), whose shell writes /ready, waits for /go and
# writes /result, which are DIR's. MODE:
#   ovm    a tmpfs on /a holding sub/hidden ("lower"), then a tmpfs on /a/sub holding u ("upper"). At
#          go: /a/sub/u reads upper; once /a/sub is unmounted, /a/sub/hidden reads lower
#   hidden as ovm, with fd 4 opened on /a/sub/hidden before /a/sub was mounted on, and a file of the
#          same name on the mount on top ("upper"). At go: fd 4 reads lower. Refused (path-hidden):
#          restore would open the path, the file on top
#   xattr  a tmpfs on /b holding f ("data") with extended attributes user.x and trusted.t (set before
#          pivot_root, by python3). At go: /b/f reads data. Refused (tmpfs-xattr): the tar keeps none
# --selftest-corrupt: ovm writes upper into /a/sub/hidden before the mount hides it; hidden reads fd 4 to its end; xattr empties /b/f.
d=$1
mode=$2
corrupt=
for a in "$@"; do [ "$a" = --selftest-corrupt ] && corrupt=1; done
for x in bin old a b; do mkdir -p "$d/$x"; done
cp /bin/busybox "$d/bin/busybox"
for a in sh cat echo mount umount mv sleep mkdir setsid; do ln -sf busybox "$d/bin/$a"; done
echo 0 > "$d/stdio"
case $mode in
ovm | hidden)
  setup='mount -t tmpfs t1 /a; mkdir /a/sub; echo lower > /a/sub/hidden'
  [ "$mode" = ovm ] && [ -n "$corrupt" ] && setup="$setup; echo upper > /a/sub/hidden"
  [ "$mode" = hidden ] && setup="$setup; exec 4</a/sub/hidden"
  setup="$setup; mount -t tmpfs t2 /a/sub; echo upper > /a/sub/u"
  [ "$mode" = hidden ] && setup="$setup; echo upper > /a/sub/hidden"
  if [ "$mode" = ovm ]; then
    check='[ "$(cat /a/sub/u)" = upper ] || r="FAIL: /a/sub/u reads $(cat /a/sub/u 2>&1)"
      umount /a/sub || r="FAIL: umount /a/sub"
      [ "$(cat /a/sub/hidden 2>&1)" = lower ] || r="FAIL: /a/sub/hidden under the mount reads $(cat /a/sub/hidden 2>&1)"'
  else
    [ -n "$corrupt" ] && setup="$setup; cat <&4 >/dev/null 2>&1; cat <&4 >/stdio"
    check='read -r l <&4; [ "$l" = lower ] || r="FAIL: fd 4 reads '"'"'$l'"'"'"'
  fi
  pre=:
  ;;
xattr)
  pre='mount -t tmpfs t3 "$0/b"; echo data > "$0/b/f"; python3 -c "import os,sys; os.setxattr(sys.argv[1], \"user.x\", b\"1\"); os.setxattr(sys.argv[1], \"trusted.t\", b\"2\")" "$0/b/f"'
  setup=:
  [ -n "$corrupt" ] && setup=': > /b/f'
  check='[ "$(cat /b/f)" = data ] || r="FAIL: /b/f reads $(cat /b/f 2>&1)"'
  ;;
*)
  echo "unknown mode $mode" >&2
  exit 2
  ;;
esac
cat > "$d/inner.sh" <<INNER
umount -l /old
$setup
echo \$\$ > /ready.tmp && mv /ready.tmp /ready
while [ ! -e /go ]; do sleep 0.02; done
r=PASS
$check
printf "%s\\npid=%s\\n" "\$r" "\$\$" > /result.tmp && mv /result.tmp /result
INNER
exec unshare -m --fork sh -c 'set -e; mount --make-rprivate /; mount --bind "$0" "$0"; '"$pre"'; cd "$0"; pivot_root . old; exec /old/bin/busybox chroot . /bin/setsid /bin/sh /inner.sh </stdio >/stdio 2>&1' "$d"
