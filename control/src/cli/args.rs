//! The command line's definition: every subcommand and flag, as clap parses them (also what the completions and man pages are written from).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use control::config::parse_seed;

#[derive(Parser)]
#[command(
    name = "xdp-ecmp",
    version = super::version::SHORT,
    about = "ECMP forwarding plane in XDP for Linux leaf/spine hosts"
)]
pub(crate) struct Cli {
    /// bpffs directory holding the pinned maps and links.
    #[arg(long, global = true, default_value = "/sys/fs/bpf/xdp-ecmp")]
    pub(crate) pin_dir: PathBuf,
    /// Directory where the hash seed is kept across reboots (default
    /// /var/lib/xdp-ecmp; `state_dir` in the config file).
    #[arg(long, global = true)]
    pub(crate) state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Mode {
    /// Native (driver) XDP, generic where the driver has none.
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Policy {
    /// Source and destination address.
    L3,
    /// Addresses, protocol and ports.
    L4,
}

#[derive(Subcommand)]
pub(crate) enum ShowWhat {
    /// Routes in the dataplane and their verdict.
    Routes,
    /// ECMP groups: mode, window and members.
    Groups,
    /// Next hops: egress, neighbour MAC, state.
    Nexthops,
    /// Attached ports: the MAC frames are admitted to, the forwarding switches.
    Ports,
    /// The buckets of one group.
    Buckets {
        /// A group id, or a route's prefix (its group now: a multipath
        /// route moves to a new group when its next hops change).
        #[arg(value_name = "GROUP|PREFIX")]
        group: String,
        /// Draw the table into FILE as a PNG picture instead: one cell per
        /// bucket, coloured by its next hop, and a legend.
        #[arg(long, value_name = "FILE", conflicts_with = "json")]
        png: Option<PathBuf>,
        /// Mark the buckets whose next hop changed since FILE, a listing
        /// written earlier by `show buckets GROUP|PREFIX --json` (with
        /// --png); listings of one prefix compare across its groups.
        #[arg(long, value_name = "FILE", requires = "png")]
        moved_since: Option<PathBuf>,
    },
    /// Packets and bytes per verdict.
    Stats,
    /// Used and limit of every table.
    Capacity,
    /// The flow table (flow pinning): fill, events, flows per next hop and
    /// the entries seen last.
    Flows {
        /// Entries to list, most recently seen first.
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
}

/// `--engine`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum EngineKind {
    Xdp,
    Afxdp,
}

impl EngineKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EngineKind::Xdp => "xdp",
            EngineKind::Afxdp => "afxdp",
        }
    }
}

#[derive(Args, Default)]
pub(crate) struct RunArgs {
    /// TOML config file (keys: ports, table, plain_groups, buckets, max_buckets, idle_timer, unbalanced_timer,
    /// hash_seed, hash_policy, symmetric, netlink_rcvbuf, attach_mode, metrics, state_dir,
    /// wait_for_ports, max_routes_v4, max_routes_v6, slot_pool, anti_entropy, engine,
    /// afxdp_workers, afxdp_cpus, busy_poll, pin_flows, pin_capacity, pin_tcp_timeout,
    /// pin_udp_timeout, pin_fin_timeout); flags override it.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Ports to attach to.
    #[arg(long = "port", short = 'p')]
    pub(crate) ports: Vec<String>,
    /// Routing table to mirror (main, local, default or a number).
    #[arg(long)]
    pub(crate) table: Option<String>,
    /// resilient or modulo, for multipath routes and plain nexthop groups.
    #[arg(long)]
    pub(crate) plain_groups: Option<String>,
    /// Buckets of every resilient table, fixed (64..=4096). Without it a
    /// new table takes 128, or more where 128 cannot share the buckets by
    /// weight within 1% (5 equal next hops: 130), up to --max-buckets.
    #[arg(long)]
    pub(crate) buckets: Option<u16>,
    /// The most buckets a new table takes when --buckets is not given
    /// (128..=4096, default 4096).
    #[arg(long)]
    pub(crate) max_buckets: Option<u16>,
    /// Seconds a bucket must be idle before it moves.
    #[arg(long)]
    pub(crate) idle_timer: Option<u64>,
    /// Seconds after which busy buckets of an unbalanced group move too (0 = never).
    #[arg(long)]
    pub(crate) unbalanced_timer: Option<u64>,
    /// 64-bit hash seed as hex. Without it the running program's seed
    /// is kept, else the one stored in the state directory, else a new one.
    #[arg(long, value_parser = parse_seed)]
    pub(crate) hash_seed: Option<u64>,
    /// Make a new random hash seed (established flows move).
    #[arg(long)]
    pub(crate) new_hash_seed: bool,
    #[arg(long, value_enum)]
    pub(crate) hash_policy: Option<Policy>,
    #[arg(long)]
    pub(crate) symmetric: bool,
    /// Netlink receive buffer in bytes.
    #[arg(long)]
    pub(crate) netlink_rcvbuf: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given).
    #[arg(long)]
    pub(crate) metrics: Option<std::net::SocketAddr>,
    /// Attach configured ports that do not exist yet when they appear
    /// (otherwise a missing port is an error before anything is attached).
    #[arg(long)]
    pub(crate) wait_for_ports: bool,
    /// Size of the IPv4 route table (default 2,097,152; taken when the maps
    /// are made: pinned maps keep theirs, and a different size is an error).
    #[arg(long)]
    pub(crate) max_routes_v4: Option<u32>,
    /// Size of the IPv6 route table (default 1,048,576).
    #[arg(long)]
    pub(crate) max_routes_v6: Option<u32>,
    /// Slots of the pool every group's buckets are cut from (default
    /// 2,097,152: 16,384 groups of 128 buckets; 16 bytes a slot).
    #[arg(long)]
    pub(crate) slot_pool: Option<u32>,
    /// Compare the mirror with a fresh dump of the kernel every this many
    /// seconds and repair what differs, logging and counting it (default
    /// 300; 0 turns it off). A dump of 1M routes takes a few seconds of CPU.
    #[arg(long)]
    pub(crate) anti_entropy: Option<f64>,
    /// Who forwards: `xdp` (the XDP program, the default) or `afxdp` (the
    /// program hands the frames to forward between the ports to AF_XDP
    /// workers, which decide, rewrite and send; everything bound for the
    /// kernel stays in the program).
    #[arg(long, value_enum)]
    pub(crate) engine: Option<EngineKind>,
    /// AF_XDP workers, one per receive queue (default: the ports' queue count).
    #[arg(long)]
    pub(crate) afxdp_workers: Option<u32>,
    /// CPUs to pin the AF_XDP workers to, in turn (e.g. 0,1; default: not pinned).
    #[arg(long, value_delimiter = ',')]
    pub(crate) afxdp_cpus: Vec<usize>,
    /// AF_XDP workers spin on empty rings instead of sleeping (a CPU each).
    #[arg(long)]
    pub(crate) busy_poll: bool,
    /// Pin flows to routes inside these prefixes (comma-separated, or
    /// `all`): each flow keeps the next hop it was first sent to through
    /// bucket moves, weight and group changes, until that next hop dies or
    /// leaves the route's group.
    #[arg(long, value_delimiter = ',')]
    pub(crate) pin_flows: Vec<String>,
    /// Flows each family's flow table is sized for (default 1,048,576,
    /// rounded up to a power of two; 96 bytes an IPv4 flow, 160 an IPv6
    /// one; a full set's least recently seen entry gives way to a new one).
    #[arg(long)]
    pub(crate) pin_capacity: Option<u32>,
    /// Seconds a pinned TCP flow outlives its last packet (default 0: until
    /// its FIN or RST, or until evicted).
    #[arg(long)]
    pub(crate) pin_tcp_timeout: Option<u64>,
    /// Seconds a pinned UDP (or other) flow outlives its last packet (default 120).
    #[arg(long)]
    pub(crate) pin_udp_timeout: Option<u64>,
    /// Seconds a pinned TCP flow outlives its FIN (default 10).
    #[arg(long)]
    pub(crate) pin_fin_timeout: Option<u64>,
    /// Exit after this many seconds (for tests).
    #[arg(long, hide = true)]
    pub(crate) run_for: Option<f64>,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Run the daemon: attach, mirror the kernel's routes/nexthops/neighbours/links, keep the maps in step.
    Run(Box<RunArgs>),
    /// Show what the dataplane holds.
    Show {
        #[command(subcommand)]
        what: ShowWhat,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Which port a flow takes, asked of the loaded program itself (cl-ecmpcalc's flags).
    Calc {
        /// udp, tcp, icmp, icmpv6 or a protocol number.
        #[arg(short = 'p', long = "proto", default_value = "udp")]
        proto: String,
        #[arg(short = 's', long = "src")]
        src: Option<IpAddr>,
        #[arg(short = 'd', long = "dst")]
        dst: Option<IpAddr>,
        #[arg(long, default_value_t = 0)]
        sport: u16,
        #[arg(long, default_value_t = 0)]
        dport: u16,
        /// Ingress port: the packet is asked about as received there, to its
        /// MAC (default: the attached port with the lowest ifindex).
        #[arg(short = 'i', long = "in-port")]
        in_port: Option<String>,
        /// Answer for this hash seed instead of the running one (hex).
        #[arg(long, value_parser = parse_seed)]
        hash_seed: Option<u64>,
        /// Every packet of a pcap file instead of one built flow.
        #[arg(long)]
        pcap: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Load the program (adopting maps pinned earlier) and attach it to
    /// ports, admitting frames to each port's MAC with its forwarding
    /// switches as they are now (only `run` keeps them up to date).
    Attach {
        /// Interfaces to attach to.
        #[arg(required = true)]
        ports: Vec<String>,
        #[arg(long, value_enum, default_value = "auto")]
        mode: Mode,
        /// 64-bit hash seed as hex. Without it the pinned program's seed is
        /// kept, else the one stored in the state directory, else a new one.
        #[arg(long, value_parser = parse_seed)]
        hash_seed: Option<u64>,
        #[arg(long, value_enum, default_value = "l4")]
        hash_policy: Policy,
        /// Hash both directions of a flow alike.
        #[arg(long)]
        symmetric: bool,
    },
    /// Detach the program from ports.
    Detach {
        #[arg(required = true)]
        ports: Vec<String>,
    },
    /// Packets and bytes per verdict.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// A live view, refreshed every interval: packets/s and bits/s per next
    /// hop, per egress port and per verdict (what goes to the kernel and
    /// why), each group's members against their weights (by buckets and by
    /// traffic), the daemon's sync activity. Keys: q quit, s sort, / filter,
    /// space freeze, tab pane.
    Top {
        /// Seconds between the two reads a rate is taken over.
        #[arg(long, default_value_t = 1.0, value_parser = control::top::parse_interval)]
        interval: f64,
        /// Print one sample (two reads INTERVAL apart) and exit.
        #[arg(long)]
        once: bool,
        /// With --once: the sample as JSON.
        #[arg(long, requires = "once")]
        json: bool,
        /// Only what a prefix (its routes), an address (the route it takes)
        /// or a port carries.
        #[arg(long)]
        filter: Option<String>,
        /// Order of next hops, ports and groups.
        #[arg(long, default_value = "pps", value_parser = ["pps", "bps", "id"])]
        sort: String,
    },
    /// Empty the flow table (flow pinning), or drop the flows to PREFIX:
    /// their next packets are hashed again and pinned anew. The AF_XDP
    /// engine's own tables are not reached (they end with the daemon).
    FlushFlows {
        /// Only flows whose destination is inside this prefix.
        prefix: Option<String>,
    },
    /// Check this host before a first start: kernel, bpffs and pins,
    /// memlock, the program, the ports (XDP modes, drivers), the forwarding
    /// and multipath-hash sysctls, the config file, FRR's nexthop groups and
    /// multipath settings. One finding per line (ok, warn, fail) with what
    /// to change; exits 1 when any check fails.
    Doctor {
        /// Ports to check (default: `ports` of the config file).
        ports: Vec<String>,
        /// The config file `run` will read (default
        /// /etc/xdp-ecmp/xdp-ecmp.toml, when it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// FRR's configuration, checked when FRR is installed.
        #[arg(long, default_value = crate::doctor::DEFAULT_FRR_CONF)]
        frr_conf: PathBuf,
    },
}

/// The config file the unit gives `run`.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/xdp-ecmp/xdp-ecmp.toml";
