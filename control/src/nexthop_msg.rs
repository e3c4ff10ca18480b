//! Netlink nexthop-object messages (RTM_*NEXTHOP, RTM_*NEXTHOPBUCKET), which netlink-packet-route does not model, built on netlink-packet-core.
