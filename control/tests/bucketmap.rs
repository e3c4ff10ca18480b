//! `show buckets --png` on real maps: the daemon's resilient group of four next hops (a nexthop object's) loses one, and the picture taken with `--moved-since` marks exactly the buckets whose next hop changed, every cell in its listed next hop's colour (XE_BUCKETMAP_KEEP=DIR keeps the pictures).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use control::bucketmap::{Layout, EMPTY, EMPTY_HATCH, MARK, PALETTE};
use support::{fabric, text, xdp_ecmp, Daemon, PinDir};
use testnet::{require_root, TestNet};

mod support;

/// A directory for the listings and pictures, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let d = std::env::temp_dir().join(format!("xe-t{}-bucketmap", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch directory");
        Scratch(d)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `xdp-ecmp ARGS`, which must succeed; its standard output.
fn run(net: &TestNet, pins: &PinDir, args: &[&str]) -> Vec<u8> {
    let o = xdp_ecmp(net, pins, args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    o.stdout
}

/// `show buckets GROUP --png PNG [--moved-since SINCE]`.
fn picture(
    net: &TestNet,
    pins: &PinDir,
    group: &str,
    png: &Path,
    since: Option<&Path>,
) -> std::process::Output {
    let mut args = vec!["show", "buckets", group, "--png", png.to_str().unwrap()];
    if let Some(f) = since {
        args.extend(["--moved-since", f.to_str().unwrap()]);
    }
    xdp_ecmp(net, pins, &args)
}

/// `show buckets GROUP --json`: the text, and each bucket's next hop and port.
fn listing(net: &TestNet, pins: &PinDir, group: &str) -> (Vec<u8>, Vec<(u32, String)>) {
    let out = run(net, pins, &["show", "buckets", group, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("show buckets --json");
    let rows = v
        .as_array()
        .expect("an array")
        .iter()
        .enumerate()
        .map(|(i, b)| {
            assert_eq!(b["index"].as_u64(), Some(i as u64), "rows in index order");
            (
                b["nexthop"].as_u64().expect("nexthop") as u32,
                b["dev"].as_str().expect("dev").to_string(),
            )
        })
        .collect();
    (out, rows)
}

/// The group of the anycast route, once its buckets reach all of `ports`.
fn anycast_group(net: &TestNet, pins: &PinDir, ports: usize) -> String {
    let t0 = Instant::now();
    loop {
        let v: serde_json::Value =
            serde_json::from_slice(&run(net, pins, &["show", "routes", "--json"])).expect("routes");
        let group = v
            .as_array()
            .and_then(|a| a.iter().find(|r| r["prefix"] == "172.16.255.66/32"))
            .and_then(|r| r["group"].as_u64());
        if let Some(g) = group {
            let devs: BTreeSet<String> = listing(net, pins, &g.to_string())
                .1
                .into_iter()
                .map(|(_, d)| d)
                .collect();
            if devs.len() == ports && !devs.contains("-") {
                return g.to_string();
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the anycast route never got a group over {ports} ports"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A decoded picture: width, height, RGB rows.
struct Picture {
    width: usize,
    height: usize,
    px: Vec<u8>,
}

impl Picture {
    fn read(path: &Path) -> Picture {
        let f = std::fs::File::open(path).expect("the picture was written");
        let mut r = png::Decoder::new(std::io::BufReader::new(f))
            .read_info()
            .expect("a PNG");
        let mut px = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut px).expect("its image");
        assert_eq!(
            (info.color_type, info.bit_depth),
            (png::ColorType::Rgb, png::BitDepth::Eight)
        );
        Picture {
            width: info.width as usize,
            height: info.height as usize,
            px,
        }
    }

    fn at(&self, x: usize, y: usize) -> [u8; 3] {
        let i = 3 * (y * self.width + x);
        [self.px[i], self.px[i + 1], self.px[i + 2]]
    }

    /// Whether the ring `t` pixels deep inside the square at x, y is all
    /// `c` (`true`) or holds none of it (`false`); None when mixed.
    fn ring_is(&self, (x, y, side): (usize, usize, usize), t: usize, c: [u8; 3]) -> Option<bool> {
        let mut seen = BTreeSet::new();
        for yy in y..y + side {
            for xx in x..x + side {
                let inner = xx >= x + t && xx < x + side - t && yy >= y + t && yy < y + side - t;
                if !inner {
                    seen.insert(self.at(xx, yy) == c);
                }
            }
        }
        match (seen.contains(&true), seen.contains(&false)) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    }
}

#[test]
fn the_picture_marks_the_buckets_that_moved() {
    if !require_root("the_picture_marks_the_buckets_that_moved") {
        return;
    }
    let t0 = Instant::now();
    let net = fabric("bmap", 4);
    let pins = PinDir::new("bmap");
    let dir = Scratch::new();
    // Through a nexthop object, as FRR installs routes: the group keeps its
    // number when a member leaves (a plain multipath route moves to a new
    // group, which starts from the old one's table).
    for i in 0..4 {
        let (id, gw, dev) = (format!("1{i}"), format!("10.0.{i}.2"), format!("xe-o{i}"));
        net.ip(&["nexthop", "add", "id", &id, "via", &gw, "dev", &dev])
            .expect("nexthop");
    }
    net.ip(&["nexthop", "add", "id", "100", "group", "10/11/12/13"])
        .expect("nexthop group");
    net.ip(&["route", "add", "172.16.255.66/32", "nhid", "100"])
        .expect("route");
    let daemon = Daemon::start(&net, &pins, &["-p", "xe-in", "--hash-seed", "1234"], false);
    let group = anycast_group(&net, &pins, 4);

    // before.json as `show buckets G --json > before.json` writes it.
    let (before_text, before) = listing(&net, &pins, &group);
    let before_json = dir.path("before.json");
    std::fs::write(&before_json, &before_text).expect("before.json");
    // The route's prefix names its group: the same buckets, and the route.
    let by_prefix: serde_json::Value = serde_json::from_slice(&run(
        &net,
        &pins,
        &["show", "buckets", "172.16.255.66/32", "--json"],
    ))
    .expect("show buckets PREFIX --json");
    let rows = by_prefix.as_array().expect("rows");
    assert_eq!(rows.len(), before.len());
    assert!(
        rows.iter()
            .zip(&before)
            .all(|(r, (nh, _))| r["route"] == "172.16.255.66/32"
                && r["group"].as_u64() == group.parse::<u64>().ok()
                && r["nexthop"] == *nh),
        "{by_prefix}"
    );
    let before_png = dir.path("before.png");
    let o = picture(&net, &pins, &group, &before_png, None);
    assert!(o.status.success(), "show buckets --png: {}", text(&o));

    // Next hop 3 goes away: its link goes down, its buckets move.
    let moved_at = Instant::now();
    net.ip(&["link", "set", "xe-o3", "down"])
        .expect("link down");
    while listing(&net, &pins, &group)
        .1
        .iter()
        .any(|(_, d)| d == "xe-o3")
    {
        assert!(
            moved_at.elapsed() < Duration::from_secs(10),
            "the buckets of xe-o3 never moved"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let move_took = moved_at.elapsed();

    // The picture, between two listings that agree (so it shows what they list).
    let after_png = dir.path("after.png");
    let mut tries = 0;
    let (after, line) = loop {
        tries += 1;
        assert!(tries <= 10, "the buckets kept moving");
        let (_, a) = listing(&net, &pins, &group);
        let o = picture(&net, &pins, &group, &after_png, Some(&before_json));
        assert!(o.status.success(), "show buckets --png: {}", text(&o));
        if listing(&net, &pins, &group).1 == a {
            break (a, String::from_utf8_lossy(&o.stdout).trim().to_string());
        }
    };
    let n = after.len();
    assert_eq!(n, before.len());
    let moved: Vec<bool> = (0..n).map(|i| before[i].0 != after[i].0).collect();
    let moved_n = moved.iter().filter(|m| **m).count();
    let gone: BTreeSet<u32> = before
        .iter()
        .filter(|(_, d)| d == "xe-o3")
        .map(|(nh, _)| *nh)
        .collect();
    assert!(moved_n > 0, "a next hop left and no bucket moved");
    assert!(
        line.contains(&format!("group {group}, {n} buckets"))
            && line.contains(&format!(
                ", {moved_n} moved since {}",
                before_json.display()
            )),
        "the line printed: {line}"
    );

    // Colours by the sorted ids of both listings (the next hop that left
    // keeps its place, so the others keep their colours).
    let ids: Vec<u32> = before
        .iter()
        .chain(&after)
        .map(|(nh, _)| *nh)
        .filter(|nh| *nh != 0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let colour_of = |nh: u32| PALETTE[ids.iter().position(|i| *i == nh).expect("listed")];
    let pic = Picture::read(&after_png);
    let layout = Layout::new(n, 2);
    let last = layout.cell_rect(n - 1);
    assert!(last.0 + last.2 < pic.width && last.1 + last.2 < pic.height);
    for i in 0..n {
        let (x, y) = layout.cell_centre(i);
        let got = pic.at(x, y);
        match after[i].0 {
            0 => assert!(got == EMPTY || got == EMPTY_HATCH, "bucket {i} is empty"),
            nh => assert_eq!(got, colour_of(nh), "bucket {i}: next hop {nh}'s colour"),
        }
        let marked = pic.ring_is(layout.cell_rect(i), layout.mark, MARK);
        assert_eq!(
            marked,
            Some(moved[i]),
            "bucket {i} ({} -> {}) marked {marked:?}",
            before[i].0,
            after[i].0
        );
    }
    // The picture taken before, alone: the same colour wherever nothing moved.
    let early = Picture::read(&before_png);
    let early_layout = Layout::new(n, 1);
    for i in (0..n).filter(|i| !moved[*i]) {
        let (ex, ey) = early_layout.cell_centre(i);
        let (x, y) = layout.cell_centre(i);
        assert_eq!(early.at(ex, ey), pic.at(x, y), "bucket {i} changed colour");
    }

    // Listings that do not compare are refused, naming the file.
    let mut other: serde_json::Value = serde_json::from_slice(&before_text).unwrap();
    for b in other.as_array_mut().unwrap() {
        b["group"] = (group.parse::<u64>().unwrap() + 1).into();
    }
    let other_group = dir.path("other-group.json");
    std::fs::write(&other_group, other.to_string()).unwrap();
    let mut half: serde_json::Value = serde_json::from_slice(&before_text).unwrap();
    half.as_array_mut().unwrap().truncate(n / 2);
    let other_size = dir.path("other-size.json");
    std::fs::write(&other_size, half.to_string()).unwrap();
    for (file, says) in [
        (&other_group, "lists group"),
        (&other_size, "buckets of group"),
        (&dir.path("missing.json"), "reading the earlier listing"),
    ] {
        let o = picture(&net, &pins, &group, &dir.path("refused.png"), Some(file));
        let t = text(&o);
        assert!(!o.status.success(), "{}: accepted", file.display());
        assert!(
            t.contains(&file.display().to_string()) && t.contains(says),
            "{}: {t}",
            file.display()
        );
    }
    assert!(
        !dir.path("refused.png").exists(),
        "nothing drawn when refused"
    );

    if let Ok(keep) = std::env::var("XE_BUCKETMAP_KEEP") {
        for f in ["before.png", "after.png"] {
            std::fs::copy(dir.path(f), Path::new(&keep).join(f)).expect("keeping the picture");
        }
    }
    daemon.stop();
    println!(
        "bucketmap: group {group}, {n} buckets over 4 next hops; xe-o3 down moved {moved_n} (its {} next hop(s) held {}) in {move_took:?}; after.png {}x{} ({} bytes) marks exactly those, every cell in its next hop's colour, unmoved cells as in before.png; 3 refused listings; {:?} in all",
        gone.len(),
        before.iter().filter(|(_, d)| d == "xe-o3").count(),
        pic.width,
        pic.height,
        std::fs::metadata(&after_png).map(|m| m.len()).unwrap_or(0),
        t0.elapsed()
    );
}
