//! The benchmark report: tables (printed as Markdown as they are measured), goals met or not, the machine, written as one Markdown and one JSON file.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One cell: the text a person reads and, when it is a measurement, its value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// A number shown with `prec` decimals.
pub fn num(v: f64, prec: usize) -> Cell {
    Cell {
        text: format!("{v:.prec$}"),
        value: Some(v),
    }
}

/// A percentage shown with one decimal.
pub fn pct(v: f64) -> Cell {
    Cell {
        text: format!("{v:.1}%"),
        value: Some(v),
    }
}

/// Text that is not a measurement (a label).
pub fn text(s: impl Into<String>) -> Cell {
    Cell {
        text: s.into(),
        value: None,
    }
}

/// A table of one benchmark, as measured in this run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Table {
    /// Stable key for the JSON and the charts.
    pub id: String,
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    /// How to read it, what it leaves out.
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(id: &str, title: impl Into<String>, columns: &[&str]) -> Self {
        Table {
            id: id.into(),
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        assert_eq!(cells.len(), self.columns.len(), "row width of {}", self.id);
        self.rows.push(cells);
    }

    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    /// The value in `row` under `column`, if that cell is a measurement.
    pub fn value(&self, row: usize, column: &str) -> Option<f64> {
        let c = self.columns.iter().position(|x| x == column)?;
        self.rows.get(row)?.get(c)?.value
    }

    /// The rows whose first cell reads `label`.
    pub fn rows_labelled<'a>(&'a self, label: &'a str) -> impl Iterator<Item = usize> + 'a {
        (0..self.rows.len()).filter(move |&r| self.rows[r][0].text == label)
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("**{}**\n\n", self.title);
        let _ = writeln!(s, "| {} |", self.columns.join(" | "));
        let align: Vec<&str> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let numeric = self.rows.iter().any(|r| r[i].value.is_some());
                if numeric {
                    "---:"
                } else {
                    "---"
                }
            })
            .collect();
        let _ = writeln!(s, "|{}|", align.join("|"));
        for r in &self.rows {
            let cells: Vec<&str> = r.iter().map(|c| c.text.as_str()).collect();
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        for n in &self.notes {
            let _ = writeln!(s, "\n{n}");
        }
        s
    }

    /// Prints the table as soon as it is measured (the run's progress output).
    pub fn print(&self) {
        println!("\n{}", self.markdown());
    }
}

/// A goal of the benchmark issue and whether this run met it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Goal {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
    pub why: String,
}

/// The machine the figures come from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub kernel: String,
    pub memory_gib: f64,
    /// The CPU's vulnerabilities and their mitigations, one `name: state`
    /// per file of /sys/devices/system/cpu/vulnerabilities (empty in a
    /// report written before they were recorded).
    #[serde(default)]
    pub mitigations: Vec<String>,
}

impl Machine {
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']))
            })
            .unwrap_or("unknown")
            .to_string();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel,
            memory_gib: kib / 1048576.0,
            mitigations: mitigations(Path::new(VULNERABILITIES)),
        }
    }
}

/// Where the kernel lists the CPU's vulnerabilities, one file each.
const VULNERABILITIES: &str = "/sys/devices/system/cpu/vulnerabilities";

/// Every file in `dir` as `name: content`, by name.
fn mitigations(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let content = std::fs::read_to_string(e.path()).ok()?;
            Some(format!(
                "{}: {}",
                e.file_name().to_string_lossy(),
                content.trim()
            ))
        })
        .collect();
    v.sort();
    v
}

/// Everything one run measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub command: String,
    pub started: String,
    pub seconds: f64,
    pub machine: Machine,
    pub goals: Vec<Goal>,
    pub tables: Vec<Table>,
    pub charts: Vec<String>,
}

impl Report {
    pub fn new(command: String) -> Self {
        Report {
            command,
            started: now_utc(),
            seconds: 0.0,
            machine: Machine::probe(),
            goals: Vec::new(),
            tables: Vec::new(),
            charts: Vec::new(),
        }
    }

    /// Adds tables, printing each.
    pub fn add(&mut self, tables: Vec<Table>) {
        for t in tables {
            t.print();
            self.tables.push(t);
        }
    }

    pub fn table(&self, id: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.id == id)
    }

    pub fn goal(&mut self, what: &str, target: &str, measured: String, met: bool, why: &str) {
        self.goals.push(Goal {
            what: what.into(),
            target: target.into(),
            measured,
            met,
            why: why.into(),
        });
    }

    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::from("# xdp-ecmp benchmark report\n\n");
        let _ = writeln!(s, "- command: `{}`", self.command);
        let _ = writeln!(
            s,
            "- started: {} (UTC), took {:.0} s",
            self.started, self.seconds
        );
        let _ = writeln!(
            s,
            "- machine: {} ({} CPUs), {:.1} GiB, Linux {}",
            m.cpu, m.cpus, m.memory_gib, m.kernel
        );
        if !m.mitigations.is_empty() {
            let _ = writeln!(
                s,
                "- CPU vulnerabilities and mitigations ({VULNERABILITIES}):"
            );
            for l in &m.mitigations {
                let _ = writeln!(s, "  - {l}");
            }
        }
        let _ = writeln!(
            s,
            "- every ratio compares figures measured side by side in this run; absolute figures on a shared VM are noisy\n"
        );
        if !self.goals.is_empty() {
            s.push_str(
                "## Goals\n\n| goal | target | measured | met | why |\n|---|---|---|---|---|\n",
            );
            for g in &self.goals {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} |",
                    g.what,
                    g.target,
                    g.measured,
                    if g.met { "met" } else { "NOT met" },
                    g.why
                );
            }
            s.push('\n');
        }
        s.push_str("## Tables\n\n");
        for t in &self.tables {
            s.push_str(&t.markdown());
            s.push('\n');
        }
        if !self.charts.is_empty() {
            s.push_str("## Charts\n\n");
            for c in &self.charts {
                let _ = writeln!(s, "![{c}]({c})\n");
            }
        }
        s
    }

    /// Writes report.md, report.json (and the charts already drawn there) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let md = dir.join("report.md");
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("writing {}", md.display()))?;
        let js = dir.join("report.json");
        std::fs::write(&js, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", js.display()))?;
        Ok(())
    }
}

/// The current UTC time, as `date -u` prints it.
fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%F %T"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".into(), |s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_aligns_numbers_right_and_keeps_notes() {
        let mut t = Table::new("x", "title", &["name", "ns"]);
        t.row(vec![text("a"), num(1.25, 1)]);
        t.note("measured here");
        let md = t.markdown();
        assert!(
            md.contains("| name | ns |\n|---|---:|\n| a | 1.2 |"),
            "{md}"
        );
        assert!(md.ends_with("measured here\n"), "{md}");
        assert_eq!(t.value(0, "ns"), Some(1.25));
        assert_eq!(t.value(0, "name"), None);
    }

    #[test]
    fn machine_lists_every_vulnerability_file() {
        let dir = std::env::temp_dir().join(format!("xe-vuln-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("spectre_v2"), "Mitigation: Retpolines\n").expect("write");
        std::fs::write(dir.join("meltdown"), "Not affected\n").expect("write");
        let v = mitigations(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            v,
            [
                "meltdown: Not affected",
                "spectre_v2: Mitigation: Retpolines"
            ]
        );
        let mut r = Report::new("x".into());
        r.machine.mitigations = v;
        assert!(
            r.markdown()
                .contains("\n  - meltdown: Not affected\n  - spectre_v2: Mitigation: Retpolines\n"),
            "{}",
            r.markdown()
        );
        // A report.json from before the field still reads.
        let old = r#"{"cpu":"c","cpus":2,"kernel":"k","memory_gib":1.0}"#;
        let m: Machine = serde_json::from_str(old).expect("old machine");
        assert!(m.mitigations.is_empty());
    }

    #[test]
    fn utc_date_is_well_formed() {
        let s = now_utc();
        assert_eq!(s.len(), 19, "{s}");
        assert!(s.starts_with("20"), "{s}");
    }
}
