//! The bucket map as a picture (`show buckets GROUP --png`): one cell per bucket coloured by its next hop, buckets moved since an earlier listing marked, a legend; drawn into an RGB buffer with an 8x8 bitmap font and written as PNG.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::listings::BucketListing;

/// A colour: red, green, blue.
pub type Rgb = [u8; 3];

/// The next hops' colours, in the order of their ids (Tableau 20 without
/// its greys: distinct hues first, then their light variants). Neither
/// black (the mark) nor grey (empty buckets) is among them.
pub const PALETTE: [Rgb; 18] = [
    [0x4e, 0x79, 0xa7],
    [0xf2, 0x8e, 0x2b],
    [0x59, 0xa1, 0x4f],
    [0xe1, 0x57, 0x59],
    [0x76, 0xb7, 0xb2],
    [0xed, 0xc9, 0x48],
    [0xb0, 0x7a, 0xa1],
    [0xff, 0x9d, 0xa7],
    [0x9c, 0x75, 0x5f],
    [0xa0, 0xcb, 0xe8],
    [0xff, 0xbe, 0x7d],
    [0x8c, 0xd1, 0x7d],
    [0xb6, 0x99, 0x2d],
    [0x49, 0x98, 0x94],
    [0xf1, 0xce, 0x63],
    [0xd3, 0x72, 0x95],
    [0xd4, 0xa6, 0xc8],
    [0xd7, 0xb5, 0xa6],
];
/// An empty bucket (next hop 0: its packets go to the kernel), hatched.
pub const EMPTY: Rgb = [0xdc, 0xdc, 0xdc];
pub const EMPTY_HATCH: Rgb = [0xa8, 0xa8, 0xa8];
/// The border of a bucket whose next hop changed.
pub const MARK: Rgb = [0, 0, 0];
pub const BACKGROUND: Rgb = [0xff, 0xff, 0xff];
const TEXT: Rgb = [0x20, 0x20, 0x20];

/// Around the picture, in pixels.
const MARGIN: usize = 16;
/// Titles and legend are drawn at twice the font's 8 pixels.
const SCALE: usize = 2;
const LINE: usize = 8 * SCALE + 8;
/// Legend rows past this many next hops are summed up in one line.
const LEGEND_MAX: usize = 48;
/// Text lines are cut (in the middle) past this many characters.
const TEXT_MAX: usize = 100;

/// The colour of the next hop at `rank` among the picture's next hops
/// sorted by id: the palette, then hues a golden angle apart.
pub fn colour(rank: usize) -> Rgb {
    if let Some(c) = PALETTE.get(rank) {
        return *c;
    }
    let hue = (rank as f64 * 137.507_764) % 360.0;
    hsv(hue, 0.55, 0.85)
}

fn hsv(h: f64, s: f64, v: f64) -> Rgb {
    let c = v * s;
    let x = c * (1.0 - ((h / 60.0) % 2.0 - 1.0).abs());
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r, g, b].map(|f| ((f + m) * 255.0).round() as u8)
}

/// One bucket: its index, next hop (0: empty) and that next hop's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub index: u32,
    pub nexthop: u32,
    /// `10.1.1.1 dev swp1` (or `dev swp1` without a gateway).
    pub label: String,
}

/// A group's buckets, in index order (bucket i at position i).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub group: u32,
    /// The route it was listed by (`show buckets PREFIX`), if any.
    pub route: Option<String>,
    pub buckets: Vec<Bucket>,
}

fn label(gateway: Option<IpAddr>, dev: &str) -> String {
    match gateway {
        Some(g) => format!("{g} dev {dev}"),
        None => format!("dev {dev}"),
    }
}

/// A row of `show buckets GROUP --json`, as much of it as the picture uses.
#[derive(Deserialize)]
struct JsonRow {
    group: u32,
    #[serde(default)]
    route: Option<String>,
    index: u32,
    nexthop: u32,
    dev: String,
    gateway: Option<IpAddr>,
}

impl Listing {
    /// The listing `show buckets GROUP` prints.
    pub fn from_rows(group: u32, rows: &[BucketListing]) -> Listing {
        Listing {
            group,
            route: rows.first().and_then(|r| r.route.clone()),
            buckets: rows
                .iter()
                .map(|b| Bucket {
                    index: b.row.index,
                    nexthop: b.row.nexthop,
                    label: label(b.gateway, &b.row.dev),
                })
                .collect(),
        }
    }

    /// A listing `show buckets GROUP --json` wrote; errors name `file`.
    pub fn from_json(text: &str, file: &Path) -> Result<Listing> {
        let f = file.display();
        let rows: Vec<JsonRow> = serde_json::from_str(text).with_context(|| {
            format!("{f} is not a listing written by `xdp-ecmp show buckets GROUP --json`")
        })?;
        let Some(first) = rows.first() else {
            bail!("{f} lists no buckets (write it with `xdp-ecmp show buckets GROUP --json`)");
        };
        let group = first.group;
        let route = first.route.clone();
        let mut buckets = Vec::with_capacity(rows.len());
        for (i, r) in rows.into_iter().enumerate() {
            if r.group != group {
                bail!(
                    "{f} mixes groups {group} and {} (one `show buckets GROUP --json` lists one group)",
                    r.group
                );
            }
            if r.index as usize != i {
                bail!(
                    "{f}: row {i} is bucket {}, not {i} (not a whole `show buckets GROUP --json` listing)",
                    r.index
                );
            }
            buckets.push(Bucket {
                index: r.index,
                nexthop: r.nexthop,
                label: label(r.gateway, &r.dev),
            });
        }
        Ok(Listing {
            group,
            route,
            buckets,
        })
    }

    /// Reads `file` (see [`Listing::from_json`]).
    pub fn read(file: &Path) -> Result<Listing> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the earlier listing {}", file.display()))?;
        Listing::from_json(&text, file)
    }

    /// Refuses an earlier listing that cannot be compared bucket by bucket
    /// with this one: of another group, or of another size.
    pub fn check_comparable(&self, earlier: &Listing, file: &Path) -> Result<()> {
        let f = file.display();
        // One route's listings compare across its groups: a multipath
        // route's next hops changing gives it a new group that starts
        // from the old one's table.
        let same_route = earlier.route.is_some() && earlier.route == self.route;
        if earlier.group != self.group && !same_route {
            bail!(
                "{f} lists group {}, not group {}: take the earlier listing with `xdp-ecmp show buckets {} --json`, or list both by the route's prefix (`show buckets PREFIX`): a multipath route moves to a new group when its next hops change, starting from the old one's table",
                earlier.group,
                self.group,
                self.group
            );
        }
        if earlier.buckets.len() != self.buckets.len() {
            bail!(
                "{f} lists {} buckets of group {}, which has {} now: the group was resized, so no bucket compares with its earlier self",
                earlier.buckets.len(),
                self.group,
                self.buckets.len()
            );
        }
        Ok(())
    }
}

/// Where the cells are: a grid of `cols` columns under the title lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub count: usize,
    pub cols: usize,
    /// A cell's pitch; its square is `cell - gap` wide.
    pub cell: usize,
    pub gap: usize,
    /// The thickness of a moved bucket's border.
    pub mark: usize,
    /// The grid's top-left corner.
    pub grid_x: usize,
    pub grid_y: usize,
    /// The row labels' scale (each row starts with its first index).
    row_scale: usize,
    /// Whether each cell shows its index (when the widest one fits).
    pub indexed: bool,
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

impl Layout {
    /// The grid of `count` buckets under `title_lines` lines of title.
    pub fn new(count: usize, title_lines: usize) -> Layout {
        let count = count.max(1);
        // A square-ish grid with a power-of-two width, so rows start at
        // round indices: 16 columns up to 256 buckets, 64 for 4096.
        let side = (count as f64).sqrt().ceil() as usize;
        let cols = side.next_power_of_two().max(16).min(count);
        let (cell, gap, mark) = match cols {
            0..=16 => (40, 2, 4),
            17..=32 => (36, 2, 3),
            _ => (16, 2, 3),
        };
        let rows = count.div_ceil(cols);
        let row_scale = if cell >= 8 * SCALE + 4 { SCALE } else { 1 };
        let row_label = digits((rows - 1) * cols) * 8 * row_scale + 8;
        let interior = cell - gap - 2 * (mark + 1);
        Layout {
            count,
            cols,
            cell,
            gap,
            mark,
            grid_x: MARGIN + row_label,
            grid_y: MARGIN + title_lines * LINE + 8,
            row_scale,
            indexed: digits(count - 1) * 8 <= interior,
        }
    }

    pub fn rows(&self) -> usize {
        self.count.div_ceil(self.cols)
    }

    /// The square of bucket `index`: x, y, side.
    pub fn cell_rect(&self, index: usize) -> (usize, usize, usize) {
        let (row, col) = (index / self.cols, index % self.cols);
        (
            self.grid_x + col * self.cell,
            self.grid_y + row * self.cell,
            self.cell - self.gap,
        )
    }

    /// The pixel a bucket's colour is surely seen at (clear of its index
    /// and its mark).
    pub fn cell_centre(&self, index: usize) -> (usize, usize) {
        let (x, y, side) = self.cell_rect(index);
        (x + side / 2, y + side * 2 / 3)
    }

    fn grid_right(&self) -> usize {
        self.grid_x + self.cols * self.cell
    }

    fn grid_bottom(&self) -> usize {
        self.grid_y + self.rows() * self.cell
    }
}

/// An RGB buffer, 3 bytes a pixel, row by row.
struct Canvas {
    width: usize,
    height: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            px: BACKGROUND.repeat(width * height),
        }
    }

    fn set(&mut self, x: usize, y: usize, c: Rgb) {
        if x < self.width && y < self.height {
            let i = 3 * (y * self.width + x);
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, c: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    /// A square with a border `t` pixels thick.
    fn frame(&mut self, x: usize, y: usize, side: usize, t: usize, c: Rgb) {
        self.fill(x, y, side, t, c);
        self.fill(x, y + side - t, side, t, c);
        self.fill(x, y, t, side, c);
        self.fill(x + side - t, y, t, side, c);
    }

    /// The empty-bucket pattern: grey with darker diagonal stripes.
    fn hatch(&mut self, x: usize, y: usize, w: usize, h: usize) {
        for yy in 0..h {
            for xx in 0..w {
                let c = if (xx + yy) % 6 < 2 {
                    EMPTY_HATCH
                } else {
                    EMPTY
                };
                self.set(x + xx, y + yy, c);
            }
        }
    }

    /// `s` with its top-left corner at x, y; each font pixel `scale` wide.
    fn text(&mut self, x: usize, y: usize, s: &str, scale: usize, c: Rgb) {
        for (n, ch) in s.chars().enumerate() {
            let code = if ch.is_ascii() {
                ch as usize
            } else {
                '?' as usize
            };
            let glyph = font8x8::legacy::BASIC_LEGACY[code];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    // Bit 0 is the glyph's leftmost pixel.
                    if bits & (1 << col) != 0 {
                        self.fill(x + (n * 8 + col) * scale, y + row * scale, scale, scale, c);
                    }
                }
            }
        }
    }

    fn png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Best);
        let mut w = enc.write_header().context("writing the PNG header")?;
        w.write_image_data(&self.px)
            .context("writing the PNG image data")?;
        w.finish().context("finishing the PNG")?;
        Ok(out)
    }
}

/// Text that reads on `c`: dark on light colours, white on dark ones.
fn ink_on(c: Rgb) -> Rgb {
    let luma = 0.299 * f64::from(c[0]) + 0.587 * f64::from(c[1]) + 0.114 * f64::from(c[2]);
    if luma < 110.0 {
        BACKGROUND
    } else {
        TEXT
    }
}

/// `s` cut in the middle to `max` characters.
fn fit(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let head: String = s.chars().take(max / 2 - 2).collect();
    let tail: String = s.chars().skip(n - (max - max / 2 - 1)).collect();
    format!("{head}...{tail}")
}

fn text_width(s: &str, scale: usize) -> usize {
    s.chars().count() * 8 * scale
}

/// A drawn bucket map.
pub struct Picture {
    pub png: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub layout: Layout,
    /// Buckets whose next hop differs from the earlier listing's.
    pub moved: usize,
}

/// An earlier listing of the same group and how to name it in the title.
pub struct Earlier<'a> {
    pub listing: &'a Listing,
    /// `before.json, 2026-12-01 10:20:30 UTC`.
    pub name: &'a str,
}

/// Draws `now`: `title` first, then (with `earlier`, which must be
/// comparable: see [`Listing::check_comparable`]) how many buckets moved,
/// the grid, and a legend of the next hops.
pub fn draw(now: &Listing, earlier: Option<&Earlier>, title: &str) -> Result<Picture> {
    let count = now.buckets.len();
    if count == 0 || count > 65_536 {
        bail!("group {} has {count} buckets: nothing to draw", now.group);
    }
    if let Some(e) = earlier {
        if e.listing.buckets.len() != count {
            bail!(
                "the earlier listing has {} buckets, group {} has {count}",
                e.listing.buckets.len(),
                now.group
            );
        }
    }
    let before = |i: usize| earlier.map(|e| e.listing.buckets[i].nexthop);
    let moved: Vec<bool> = (0..count)
        .map(|i| before(i).is_some_and(|b| b != now.buckets[i].nexthop))
        .collect();
    let moved_n = moved.iter().filter(|m| **m).count();

    // The next hops of both listings, sorted by id: a next hop keeps its
    // colour in the picture taken before and the one taken after.
    let mut held: BTreeMap<u32, (usize, usize, String)> = BTreeMap::new();
    for b in &now.buckets {
        let e = held.entry(b.nexthop).or_insert((0, 0, b.label.clone()));
        e.0 += 1;
    }
    if let Some(e) = earlier {
        for b in &e.listing.buckets {
            let e = held.entry(b.nexthop).or_insert((0, 0, b.label.clone()));
            e.1 += 1;
        }
    }
    let empty = held.remove(&0);
    let ids: Vec<u32> = held.keys().copied().collect();
    let rank: BTreeMap<u32, usize> = ids.iter().enumerate().map(|(r, id)| (*id, r)).collect();
    let fill_of = |nh: u32| rank.get(&nh).map(|r| colour(*r));

    let mut lines = vec![fit(title, TEXT_MAX)];
    if let Some(e) = earlier {
        lines.push(fit(
            &format!("{moved_n} of {count} buckets moved since {}", e.name),
            TEXT_MAX,
        ));
    }
    let layout = Layout::new(count, lines.len());

    // The legend: one row per next hop (swatch, id, label, buckets), the
    // empty buckets, the mark.
    let id_w = ids.last().map_or(1, |id| digits(*id as usize));
    let label_w = held
        .values()
        .map(|h| h.2.chars().count().min(40))
        .max()
        .unwrap_or(0);
    let with_before = |now_n: usize, before_n: usize| {
        let s = if now_n == 1 { " " } else { "s" };
        match earlier {
            Some(_) => format!("{now_n:>4} bucket{s}, {before_n:>4} before"),
            None => format!("{now_n:>4} bucket{s}"),
        }
    };
    let mut legend: Vec<(LegendSwatch, String)> = Vec::new();
    for (i, (id, (n, b, l))) in held.iter().enumerate() {
        if i == LEGEND_MAX {
            let rest = held.len() - LEGEND_MAX;
            legend.push((
                LegendSwatch::None,
                format!("... and {rest} more next hops (see `show buckets`)"),
            ));
            break;
        }
        legend.push((
            LegendSwatch::Colour(colour(i)),
            format!(
                "nexthop {id:<id_w$}  {:<label_w$}  {}",
                fit(l, 40),
                with_before(*n, *b)
            ),
        ));
    }
    if let Some((n, b, _)) = empty {
        legend.push((
            LegendSwatch::Empty,
            format!("empty, to the kernel  {}", with_before(n, b)),
        ));
    }
    if earlier.is_some() {
        let s = if moved_n == 1 { "" } else { "s" };
        legend.push((
            LegendSwatch::Mark,
            format!("moved since the earlier listing: {moved_n} bucket{s}"),
        ));
    }

    const SWATCH: usize = 32;
    let legend_y = layout.grid_bottom() + 16;
    let width = lines
        .iter()
        .map(|l| MARGIN + text_width(l, SCALE))
        .chain(
            legend
                .iter()
                .map(|(_, t)| MARGIN + SWATCH + 12 + text_width(t, SCALE)),
        )
        .chain([layout.grid_right()])
        .max()
        .unwrap_or(0)
        + MARGIN;
    let height = legend_y + legend.len() * LINE + MARGIN;
    let mut c = Canvas::new(width, height);

    for (i, l) in lines.iter().enumerate() {
        c.text(MARGIN, MARGIN + i * LINE, l, SCALE, TEXT);
    }
    let row_h = 8 * layout.row_scale;
    for row in 0..layout.rows() {
        let first = (row * layout.cols).to_string();
        let x = layout.grid_x - 8 - text_width(&first, layout.row_scale);
        let y = layout.grid_y + row * layout.cell + (layout.cell - layout.gap - row_h) / 2;
        c.text(x, y, &first, layout.row_scale, TEXT);
    }
    for (i, b) in now.buckets.iter().enumerate() {
        let (x, y, side) = layout.cell_rect(i);
        let ink = match fill_of(b.nexthop) {
            Some(f) => {
                c.fill(x, y, side, side, f);
                ink_on(f)
            }
            None => {
                c.hatch(x, y, side, side);
                TEXT
            }
        };
        if moved[i] {
            c.frame(x, y, side, layout.mark, MARK);
        }
        if layout.indexed {
            let inset = layout.mark + 2;
            c.text(x + inset, y + inset, &b.index.to_string(), 1, ink);
        }
    }
    for (i, (swatch, t)) in legend.iter().enumerate() {
        let y = legend_y + i * LINE;
        let h = 8 * SCALE;
        match swatch {
            LegendSwatch::Colour(f) => c.fill(MARGIN, y, SWATCH, h, *f),
            LegendSwatch::Empty => c.hatch(MARGIN, y, SWATCH, h),
            LegendSwatch::Mark => c.frame(MARGIN + (SWATCH - h) / 2, y, h, layout.mark, MARK),
            LegendSwatch::None => {}
        }
        c.text(MARGIN + SWATCH + 12, y, t, SCALE, TEXT);
    }
    Ok(Picture {
        png: c.png()?,
        width,
        height,
        layout,
        moved: moved_n,
    })
}

enum LegendSwatch {
    Colour(Rgb),
    Empty,
    Mark,
    None,
}

/// `t` as `2026-12-01 10:20:30 UTC`.
pub fn utc(t: SystemTime) -> String {
    let s = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((s / 86_400) as i64, s % 86_400);
    // Days to the civil calendar (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes the picture of `rows` (group `group`) to `out`, marking the
/// buckets moved since the listing in `moved_since`; returns the line
/// `show buckets --png` prints.
pub fn write(
    group: u32,
    rows: &[BucketListing],
    moved_since: Option<&Path>,
    out: &Path,
) -> Result<String> {
    let now = Listing::from_rows(group, rows);
    let earlier = match moved_since {
        Some(f) => {
            let l = Listing::read(f)?;
            now.check_comparable(&l, f)?;
            let when = std::fs::metadata(f)
                .and_then(|m| m.modified())
                .map(|t| format!(" ({})", utc(t)))
                .unwrap_or_default();
            Some((l, format!("{}{when}", f.display())))
        }
        None => None,
    };
    let route = now
        .route
        .as_ref()
        .map_or_else(String::new, |r| format!("route {r}, "));
    let title = format!(
        "{route}group {group}, {} buckets, {}",
        now.buckets.len(),
        utc(SystemTime::now())
    );
    let e = earlier
        .as_ref()
        .map(|(l, name)| Earlier { listing: l, name });
    let p = draw(&now, e.as_ref(), &title)?;
    std::fs::write(out, &p.png).with_context(|| format!("writing {}", out.display()))?;
    let mut line = format!(
        "wrote {}: group {group}, {} buckets ({}x{} pixels)",
        out.display(),
        now.buckets.len(),
        p.width,
        p.height
    );
    if let Some(f) = moved_since {
        line += &format!(", {} moved since {}", p.moved, f.display());
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::BucketRow;
    use std::collections::BTreeSet;

    /// `n` buckets over next hops `ids` in turn (0 = empty).
    fn listing(group: u32, n: usize, ids: &[u32]) -> Listing {
        Listing {
            group,
            route: None,
            buckets: (0..n)
                .map(|i| {
                    let nh = ids[i % ids.len()];
                    Bucket {
                        index: i as u32,
                        nexthop: nh,
                        label: format!("10.0.{nh}.2 dev xe-o{nh}"),
                    }
                })
                .collect(),
        }
    }

    struct Decoded {
        width: usize,
        height: usize,
        px: Vec<u8>,
    }

    impl Decoded {
        fn at(&self, x: usize, y: usize) -> Rgb {
            let i = 3 * (y * self.width + x);
            [self.px[i], self.px[i + 1], self.px[i + 2]]
        }
    }

    fn decode(png_bytes: &[u8]) -> Decoded {
        let mut r = png::Decoder::new(png_bytes).read_info().expect("a PNG");
        let mut px = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut px).expect("its frame");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        px.truncate(info.buffer_size());
        Decoded {
            width: info.width as usize,
            height: info.height as usize,
            px,
        }
    }

    /// Every pixel of the ring `t` pixels deep inside bucket `i`'s square.
    fn ring(d: &Decoded, l: &Layout, i: usize, t: usize) -> Vec<Rgb> {
        let (x, y, side) = l.cell_rect(i);
        let mut v = Vec::new();
        for yy in y..y + side {
            for xx in x..x + side {
                let inner = xx >= x + t && xx < x + side - t && yy >= y + t && yy < y + side - t;
                if !inner {
                    v.push(d.at(xx, yy));
                }
            }
        }
        v
    }

    #[test]
    fn each_cell_has_its_next_hops_colour() {
        // Ids out of order on purpose: colours follow the sorted ids.
        let now = listing(4, 128, &[7, 3, 12]);
        let p = draw(&now, None, "group 4").unwrap();
        let d = decode(&p.png);
        let want = |nh: u32| match nh {
            3 => PALETTE[0],
            7 => PALETTE[1],
            12 => PALETTE[2],
            _ => unreachable!(),
        };
        for (i, b) in now.buckets.iter().enumerate() {
            let (x, y) = p.layout.cell_centre(i);
            assert_eq!(d.at(x, y), want(b.nexthop), "bucket {i}");
            // Unmarked: the colour reaches the square's edge.
            assert!(ring(&d, &p.layout, i, p.layout.mark)
                .iter()
                .all(|c| *c == want(b.nexthop)));
        }
        assert_eq!(p.moved, 0);
    }

    #[test]
    fn dimensions_follow_the_layout() {
        let now = listing(4, 128, &[1, 2, 3]);
        let p = draw(&now, None, "group 4").unwrap();
        let d = decode(&p.png);
        assert_eq!((d.width, d.height), (p.width, p.height));
        let l = p.layout;
        assert_eq!((l.cols, l.rows()), (16, 8));
        assert!(l.indexed, "three digits fit a 40-pixel cell");
        // The last cell lies inside the picture, below the title.
        let (x, y, side) = l.cell_rect(127);
        assert!(x + side + MARGIN <= d.width && y + side + MARGIN <= d.height);
        assert!(l.grid_y >= MARGIN + LINE);
        // Between two cells of a row: the background.
        let (x0, y0, side0) = l.cell_rect(0);
        assert_eq!(d.at(x0 + side0, y0 + side0 / 2), BACKGROUND);
        assert_eq!(l.cell_rect(1).0, x0 + l.cell);
        assert_eq!(l.cell_rect(16).1, y0 + l.cell);
        // A group of 8: one row of 8.
        let small = Layout::new(8, 1);
        assert_eq!((small.cols, small.rows()), (8, 1));
        assert_eq!((Layout::new(1, 1).cols, Layout::new(1, 1).rows()), (1, 1));
    }

    #[test]
    fn moved_buckets_are_marked_and_only_they() {
        let before = listing(4, 64, &[1, 2, 3, 4]);
        let mut now = before.clone();
        // Next hop 2 left: its buckets went to 1 and 4; bucket 4 emptied.
        for (k, b) in now
            .buckets
            .iter_mut()
            .filter(|b| b.nexthop == 2)
            .enumerate()
        {
            b.nexthop = [1, 4][k % 2];
            b.label = format!("10.0.{}.2 dev xe-o{}", b.nexthop, b.nexthop);
        }
        now.buckets[4].nexthop = 0;
        let e = Earlier {
            listing: &before,
            name: "before.json",
        };
        let p = draw(&now, Some(&e), "group 4").unwrap();
        assert_eq!(p.moved, 17);
        let d = decode(&p.png);
        for i in 0..64 {
            let moved = before.buckets[i].nexthop != now.buckets[i].nexthop;
            let edge = ring(&d, &p.layout, i, p.layout.mark);
            if moved {
                assert!(edge.iter().all(|c| *c == MARK), "bucket {i} is marked");
            } else {
                assert!(!edge.contains(&MARK), "bucket {i} is not marked");
            }
            // Next hop 2, gone, keeps rank 1: 3 and 4 keep their colours.
            let (x, y) = p.layout.cell_centre(i);
            let nh = now.buckets[i].nexthop;
            if nh != 0 {
                assert_eq!(d.at(x, y), PALETTE[nh as usize - 1], "bucket {i}");
            }
        }
        // The same table drawn alone: the same colours where nothing moved.
        let alone = decode(&draw(&before, None, "group 4").unwrap().png);
        let l = Layout::new(64, 1);
        for i in (0..64).filter(|i| before.buckets[*i].nexthop == now.buckets[*i].nexthop) {
            let (ax, ay) = l.cell_centre(i);
            let (x, y) = p.layout.cell_centre(i);
            assert_eq!(alone.at(ax, ay), d.at(x, y), "bucket {i}");
        }
    }

    #[test]
    fn an_empty_bucket_is_grey() {
        let now = listing(9, 32, &[5, 0, 6]);
        let p = draw(&now, None, "group 9").unwrap();
        let d = decode(&p.png);
        let (x, y, side) = p.layout.cell_rect(1);
        let mut seen = BTreeSet::new();
        for yy in y..y + side {
            for xx in x..x + side {
                let c = d.at(xx, yy);
                assert!(c[0] == c[1] && c[1] == c[2], "grey at {xx},{yy}: {c:?}");
                seen.insert(c);
            }
        }
        assert!(
            seen.contains(&EMPTY) && seen.contains(&EMPTY_HATCH),
            "hatched"
        );
        let (cx, cy) = p.layout.cell_centre(0);
        assert_eq!(d.at(cx, cy), PALETTE[0]);
    }

    #[test]
    fn two_pictures_of_one_table_are_identical() {
        let now = listing(4, 128, &[1, 2, 0, 3]);
        let before = listing(4, 128, &[1, 2, 3, 3]);
        let e = Earlier {
            listing: &before,
            name: "b",
        };
        let a = draw(&now, Some(&e), "group 4").unwrap().png;
        let b = draw(&now, Some(&e), "group 4").unwrap().png;
        assert_eq!(a, b);
        assert_eq!(&a[..8], b"\x89PNG\r\n\x1a\n");
        let other = listing(4, 128, &[2, 1, 0, 3]);
        assert_ne!(a, draw(&other, Some(&e), "group 4").unwrap().png);
    }

    #[test]
    fn large_tables_draw_at_a_sane_size() {
        for (n, ids) in [
            (4096, (1..=7).collect::<Vec<u32>>()),
            (4096, (1..=4096).collect()),
            (1, vec![1]),
            (1000, vec![1, 0]),
        ] {
            let before = listing(2, n, &ids);
            let now = listing(
                2,
                n,
                &ids[1..]
                    .iter()
                    .chain(&ids[..1])
                    .copied()
                    .collect::<Vec<_>>(),
            );
            let e = Earlier {
                listing: &before,
                name: "before.json",
            };
            let p = draw(&now, Some(&e), "group 2").unwrap();
            let d = decode(&p.png);
            assert_eq!((d.width, d.height), (p.width, p.height));
            assert!(
                p.width <= 1800 && p.height <= 2500,
                "{n} buckets: {}x{}",
                p.width,
                p.height
            );
            let (x, y, side) = p.layout.cell_rect(n - 1);
            assert!(x + side <= p.width && y + side <= p.height);
            let (cx, cy) = p.layout.cell_centre(n - 1);
            assert_ne!(
                d.at(cx, cy),
                BACKGROUND,
                "{n} buckets: the last cell is drawn"
            );
        }
        let l = Layout::new(4096, 2);
        assert_eq!((l.cols, l.rows()), (64, 64));
        assert!(!l.indexed, "four digits do not fit a 16-pixel cell");
    }

    #[test]
    fn colours_are_distinct_and_never_grey_or_black() {
        let cs: Vec<Rgb> = (0..64).map(colour).collect();
        let set: BTreeSet<Rgb> = cs.iter().copied().collect();
        assert_eq!(set.len(), cs.len());
        for c in cs {
            assert!(!(c[0] == c[1] && c[1] == c[2]), "{c:?} is grey");
            assert_ne!(c, MARK);
        }
    }

    fn row(index: u32, nexthop: u32, gw: Option<&str>) -> BucketListing {
        BucketListing {
            group: 4,
            route: None,
            row: BucketRow {
                index,
                nexthop,
                dev: if nexthop == 0 {
                    "-".into()
                } else {
                    format!("xe-o{nexthop}")
                },
                last_used_tick: 0,
            },
            idle_time: None,
            gateway: gw.map(|g| g.parse().unwrap()),
        }
    }

    #[test]
    fn the_json_listing_reads_back_as_drawn() {
        let rows = vec![
            row(0, 1, Some("10.0.1.2")),
            row(1, 2, Some("fe80::1")),
            row(2, 0, None),
        ];
        let json = serde_json::to_string_pretty(&rows).unwrap();
        let read = Listing::from_json(&json, Path::new("b.json")).unwrap();
        assert_eq!(read, Listing::from_rows(4, &rows));
        assert_eq!(read.buckets[0].label, "10.0.1.2 dev xe-o1");
        assert_eq!(read.buckets[2].label, "dev -");
    }

    #[test]
    fn an_earlier_listing_of_another_group_or_size_is_refused_by_name() {
        let f = Path::new("/tmp/before.json");
        let now = listing(4, 128, &[1, 2]);
        let e = now
            .check_comparable(&listing(5, 128, &[1, 2]), f)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("/tmp/before.json lists group 5, not group 4"),
            "{e}"
        );
        let e = now
            .check_comparable(&listing(4, 64, &[1, 2]), f)
            .unwrap_err();
        assert!(
            e.to_string().contains("/tmp/before.json lists 64 buckets"),
            "{e}"
        );
        assert!(now.check_comparable(&listing(4, 128, &[2]), f).is_ok());
        // Listed by one route's prefix, its groups compare; another route's do not.
        let by_route = |group, route: &str| Listing {
            route: Some(route.into()),
            ..listing(group, 128, &[1, 2])
        };
        let now = by_route(7, "172.16.255.66/32");
        assert!(now
            .check_comparable(&by_route(3, "172.16.255.66/32"), f)
            .is_ok());
        assert!(now
            .check_comparable(&by_route(3, "172.16.255.67/32"), f)
            .is_err());
        assert!(now.check_comparable(&listing(3, 128, &[1]), f).is_err());
        for bad in ["", "{}", "[]", "[{\"group\": 4}]"] {
            let e = Listing::from_json(bad, f).unwrap_err();
            assert!(
                format!("{e:#}").contains("/tmp/before.json"),
                "{bad}: {e:#}"
            );
        }
        let rows = [row(0, 1, None), row(2, 1, None)];
        let e = Listing::from_json(&serde_json::to_string(&rows).unwrap(), f).unwrap_err();
        assert!(e.to_string().contains("row 1 is bucket 2"), "{e}");
    }

    #[test]
    fn text_is_drawn_where_it_is_said_to_be() {
        let p = draw(&listing(4, 16, &[1]), None, "I").unwrap();
        let d = decode(&p.png);
        // "I" at scale 2: its stem is dark, the space left of it is not.
        let dark = (MARGIN..MARGIN + 16)
            .flat_map(|x| (MARGIN..MARGIN + 16).map(move |y| (x, y)))
            .filter(|(x, y)| d.at(*x, *y) == TEXT)
            .count();
        assert!(dark > 20, "{dark} dark pixels in the title's first glyph");
        assert_eq!(d.at(MARGIN - 1, MARGIN), BACKGROUND);
    }

    #[test]
    fn utc_dates() {
        let at = |s: u64| utc(UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(at(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(at(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn long_text_is_cut_in_the_middle() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(
            fit("/very/long/path/to/before.json", 20),
            "/very/lo...fore.json"
        );
    }
}
