/*
 * netlink: holds a NETLINK_ROUTE socket (a kind criu-bun cannot dump yet: the dump must refuse
 * it with one line and leave this process running). After go: the socket still answers an
 * RTM_GETLINK dump request.
 * --selftest-corrupt: close the socket.
 */
#include "wl.h"
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

int main(int argc, char **argv) {
	wl_init(argc, argv);
	int nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	if (nl < 0) { perror("socket"); return 2; }
	wl_ready();
	if (wl_corrupting("close", "close")) close(nl);
	while (!wl_go()) wl_sleep_ms(10);
	wl_check_ids();
	struct { struct nlmsghdr h; struct ifinfomsg i; } req = {{sizeof req, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0}, {.ifi_family = AF_UNSPEC}};
	WL_CHECK(send(nl, &req, sizeof req, 0) == sizeof req, "netlink send failed (errno %d)", errno);
	char buf[8192];
	ssize_t n = recv(nl, buf, sizeof buf, MSG_DONTWAIT);
	for (int i = 0; n < 0 && errno == EAGAIN && i < 100; i++) { wl_sleep_ms(5); n = recv(nl, buf, sizeof buf, MSG_DONTWAIT); }
	WL_CHECK(n > 0, "netlink gave no answer (errno %d)", errno);
	wl_finish();
}
