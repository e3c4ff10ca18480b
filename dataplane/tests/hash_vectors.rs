//! Hash vectors: bpf/include/xe_hash.h built for the host vs the Rust port, and the bucket the program picks vs the one the port predicts.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::packets::*;
use common::*;
use dataplane::abi::{xe_config, xe_flow, CFG_SYMMETRIC, HASH_ALL_FIELDS, HASH_POLICY_L3};
use dataplane::forward::hash::flow_hash;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use testnet::require_root;

/// Fixed vectors. The first carries the output recorded when the hash was
/// chosen: a change means every flow would take another path after an
/// upgrade, so it must be deliberate.
/// (seed, fields, flags, src, dst, sport, dport, proto, recorded hash or 0).
type Vector = ([u32; 2], u32, u32, [u8; 4], [u8; 4], u16, u16, u8, u32);

const FIXED: [Vector; 4] = [
    (
        [0, 0],
        0,
        0,
        [10, 2, 0, 100],
        [172, 16, 255, 66],
        32700,
        53,
        17,
        934_787_298,
    ),
    (
        [0x0123_4567, 0x89ab_cdef],
        0,
        0,
        [10, 2, 0, 100],
        [172, 16, 255, 66],
        31884,
        53,
        17,
        0,
    ),
    (
        [1, 2],
        0x03,
        0,
        [192, 0, 2, 1],
        [198, 51, 100, 1],
        1,
        2,
        6,
        0,
    ),
    (
        [1, 2],
        0x37,
        1,
        [198, 51, 100, 1],
        [192, 0, 2, 1],
        2,
        1,
        6,
        0,
    ),
];

fn build_host_hash() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("xe-hashvec");
    let arch = std::env::consts::ARCH;
    let status = Command::new("cc")
        .args([
            "-O2",
            "-Wall",
            "-Werror",
            &format!("-I/usr/include/{arch}-linux-gnu"),
        ])
        .arg(format!("-I{}", manifest.join("../bpf/include").display()))
        .arg(manifest.join("tests/hashvec/hashvec.c"))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("running cc (install build-essential: scripts/setup.sh)");
    assert!(status.success(), "compiling tests/hashvec/hashvec.c failed");
    out
}

fn random_flow(rng: &mut SmallRng) -> xe_flow {
    let mut f = xe_flow {
        is_v6: u8::from(rng.random_bool(0.5)),
        ..Default::default()
    };
    let n = if f.is_v6 != 0 { 4 } else { 1 };
    for i in 0..n {
        f.src[i] = rng.random();
        f.dst[i] = if rng.random_bool(0.1) {
            f.src[i]
        } else {
            rng.random()
        };
    }
    f.sport = rng.random();
    f.dport = if rng.random_bool(0.1) {
        f.sport
    } else {
        rng.random()
    };
    f.proto = rng.random();
    f.flowlabel = rng.random::<u32>() & 0xfffff;
    f
}

#[test]
fn c_header_and_rust_port_agree() {
    let exe = build_host_hash();
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let mut cases = Vec::new();
    for (seed, fields, flags, s, d, sp, dp, proto, _) in FIXED {
        let mut f = xe_flow::default();
        f.src[0] = u32::from_ne_bytes(s);
        f.dst[0] = u32::from_ne_bytes(d);
        (f.sport, f.dport, f.proto) = (sp, dp, proto);
        cases.push((seed, fields, flags, f));
    }
    for _ in 0..100_000 {
        let fields = match rng.random_range(0..4u8) {
            0 => 0,
            1 => HASH_POLICY_L3,
            _ => rng.random::<u32>() & HASH_ALL_FIELDS,
        };
        let flags = if rng.random_bool(0.5) {
            CFG_SYMMETRIC
        } else {
            0
        };
        cases.push((
            [rng.random(), rng.random()],
            fields,
            flags,
            random_flow(&mut rng),
        ));
    }
    let mut input = String::new();
    for (seed, fields, flags, f) in &cases {
        input.push_str(&format!(
            "{} {} {fields} {flags} {} {} {} {} {} {} {} {} {} {} {} {} {}\n",
            seed[0],
            seed[1],
            f.is_v6,
            f.src[0],
            f.src[1],
            f.src[2],
            f.src[3],
            f.dst[0],
            f.dst[1],
            f.dst[2],
            f.dst[3],
            f.sport,
            f.dport,
            f.proto,
            f.flowlabel
        ));
    }
    let mut child = Command::new(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running the host hash");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("host hash output");
    writer.join().expect("writer").expect("writing vectors");
    let c_hashes: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().expect("number"))
        .collect();
    assert_eq!(
        c_hashes.len(),
        cases.len(),
        "host hash answered every vector"
    );
    let mut mismatches = 0;
    for ((seed, fields, flags, f), c) in cases.iter().zip(&c_hashes) {
        if flow_hash(f, *seed, *fields, *flags) != *c {
            mismatches += 1;
        }
    }
    println!(
        "hash vectors: {} compared (C header on the host vs Rust), {mismatches} mismatches",
        cases.len()
    );
    assert_eq!(mismatches, 0);
    // The first fixed vector pins the function itself, not just C == Rust.
    assert_eq!(
        c_hashes[0], FIXED[0].8,
        "HalfSipHash-1-3 output changed: an ABI change"
    );
    let distinct: std::collections::HashSet<_> = c_hashes.iter().collect();
    assert!(
        distinct.len() > cases.len() * 99 / 100,
        "hash collapses inputs"
    );
}

#[test]
fn program_picks_the_bucket_the_port_predicts() {
    if !require_root("program_picks_the_bucket_the_port_predicts") {
        return;
    }
    let mut world = World::new("hashvec");
    let mut rng = SmallRng::seed_from_u64(0xb0c4e7);
    let mut compared = 0;
    for round in 0..4 {
        let cfg = xe_config {
            seed: [rng.random(), rng.random()],
            hash_fields: [0, HASH_POLICY_L3, 0x3f, 0x17][round],
            flags: if round % 2 == 1 { CFG_SYMMETRIC } else { 0 },
            ..Default::default()
        };
        world.set_config(cfg);
        for _ in 0..2048 {
            let sport: u16 = rng.random();
            let dport: u16 = rng.random();
            let client = format!("10.2.{}.{}", rng.random::<u8>(), rng.random::<u8>());
            let pkt = eth(
                IN_MAC,
                &[],
                ETH_IP,
                &Ip4::new(&client, "172.16.255.66", 17).packet(&udp(sport, dport, b"")),
            );
            let (_, _, d) = world.run(&pkt);
            let f = flow4(&client, "172.16.255.66", sport, dport, 17);
            let h = flow_hash(&f, cfg.seed, cfg.hash_fields, cfg.flags);
            assert_eq!(d.hash, h, "hash of {client}:{sport} -> :{dport}");
            assert_eq!(d.bucket, h % u32::from(RES_BUCKETS), "bucket");
            compared += 1;
        }
    }
    println!("bucket vectors: {compared} flows, program bucket == predicted bucket");
}
