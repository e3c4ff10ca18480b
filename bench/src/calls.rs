//! Calls into the kernel per forwarded packet, for each program the cost tables compare: call instructions in the verifier's translated program by target, and the kernel functions one forwarded packet enters, traced with ftrace's function_graph tracer in a tracefs instance of our own.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libbpf_rs::query::{ProgInfoIter, ProgInfoQueryOptions};

use crate::report::{num, text, Cell, Table};

const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
const PSEUDO_CALL: u8 = 1; // a call of a subprogram of the same program
const PSEUDO_KFUNC_CALL: u8 = 2;
/// A tail call: the kernel shows it as a call of this helper id.
const FUNC_TAIL_CALL: i32 = 12;
/// The test-run entry of XDP programs: everything the traced run does is under it.
const TEST_RUN_ENTRY: &str = "bpf_prog_test_run_xdp";
/// The test run's loop, which invokes the program (the fallback frame).
const TEST_RUN_LOOP: &str = "bpf_test_run";
/// The XDP dispatcher's functions invoke the program when the kernel traces them.
const DISPATCHER: &str = "bpf_dispatcher_";

/// The call instructions of one translated program.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Static {
    /// Calls into the kernel (helpers, kfuncs, map operations the verifier
    /// calls directly, tail calls), by target.
    pub targets: BTreeMap<String, usize>,
    /// Calls of the program's own subprograms (no kernel code).
    pub subprograms: usize,
}

impl Static {
    pub fn kernel_calls(&self) -> usize {
        self.targets.values().sum()
    }
}

/// Kernel symbols by address (/proc/kallsyms), for naming call targets.
pub struct Symbols {
    by_addr: HashMap<u64, String>,
    /// `__bpf_call_base`: a translated helper call's immediate is the
    /// target's address less this one (bpftool names targets the same way).
    call_base: Option<u64>,
}

impl Symbols {
    pub fn load() -> Self {
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let mut by_addr = HashMap::new();
        let mut call_base = None;
        for l in text.lines() {
            let mut f = l.split_whitespace();
            let (Some(a), Some(_), Some(name)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let Ok(a) = u64::from_str_radix(a, 16) else {
                continue;
            };
            if a == 0 {
                continue; // addresses hidden (kptr_restrict)
            }
            if name == "__bpf_call_base" {
                call_base = Some(a);
            }
            by_addr.entry(a).or_insert_with(|| name.to_string());
        }
        Symbols { by_addr, call_base }
    }

    fn name(&self, imm: i32, src: u8) -> String {
        let resolved = self
            .call_base
            .filter(|_| imm != 0)
            .and_then(|b| self.by_addr.get(&b.wrapping_add(i64::from(imm) as u64)));
        match (resolved, src) {
            (Some(n), PSEUDO_KFUNC_CALL) => format!("{n} (kfunc)"),
            (Some(n), _) => n.clone(),
            (None, _) if imm == FUNC_TAIL_CALL => "bpf_tail_call".into(),
            (None, _) if self.call_base.is_none() || imm == 0 => {
                "a target the kernel does not show (kallsyms addresses hidden)".into()
            }
            (None, _) => format!("unresolved target (imm {imm})"),
        }
    }
}

/// The call instructions of translated (xlated) instructions.
pub fn calls_in(xlated: &[u8], syms: &Symbols) -> Static {
    let mut s = Static::default();
    for insn in xlated.chunks_exact(8) {
        if insn[0] != CALL {
            continue;
        }
        let src = insn[1] >> 4;
        if src == PSEUDO_CALL {
            s.subprograms += 1;
            continue;
        }
        let imm = i32::from_ne_bytes([insn[4], insn[5], insn[6], insn[7]]);
        *s.targets.entry(syms.name(imm, src)).or_default() += 1;
    }
    s
}

/// The calls in the program `fd` as the verifier translated it
/// (BPF_OBJ_GET_INFO_BY_FD's xlated instructions).
pub fn static_calls(fd: BorrowedFd<'_>, syms: &Symbols) -> Result<Static> {
    let id = libbpf_rs::Program::id_from_fd(fd).context("reading a program's id")?;
    let opts = ProgInfoQueryOptions::default().include_xlated_prog_insns(true);
    let info = ProgInfoIter::with_query_opts(opts)
        .find(|p| p.id == id)
        .with_context(|| format!("program {id} not found among the loaded programs"))?;
    if info.xlated_prog_insns.is_empty() {
        bail!("the kernel gave no translated instructions for program {id}");
    }
    Ok(calls_in(&info.xlated_prog_insns, syms))
}

/// A call graph from function_graph's text output: node 0 is the root,
/// every other node one function entered.
#[derive(Debug, Default)]
pub struct Graph {
    names: Vec<String>,
    children: Vec<Vec<usize>>,
}

impl Graph {
    /// Parses function_graph's default output (CPU, duration, then the
    /// calls: `name() {` opens a call, `}` closes it, `name();` is a call
    /// without calls of its own). Closes of calls entered before the
    /// trace began are skipped; comments and context-switch lines too.
    pub fn parse(trace: &str) -> Graph {
        let mut g = Graph {
            names: vec![String::new()],
            children: vec![Vec::new()],
        };
        let mut stack = vec![0usize];
        for line in trace.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((_, call)) = line.split_once('|') else {
                continue;
            };
            let call = call.trim();
            if call.starts_with('}') {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            if call.starts_with("/*") {
                continue;
            }
            // A return value or other comment after the call.
            let call = call.split(" /*").next().unwrap_or(call).trim_end();
            let opens = call.ends_with('{');
            if !opens && !call.ends_with(';') {
                continue;
            }
            let Some(name) = call.split('(').next().map(str::trim) else {
                continue;
            };
            if name.is_empty() || name.contains(' ') {
                continue;
            }
            let id = g.names.len();
            g.names.push(name.to_string());
            g.children.push(Vec::new());
            let parent = *stack.last().unwrap_or(&0);
            g.children[parent].push(id);
            if opens {
                stack.push(id);
            }
        }
        g
    }

    /// The first node named `name` under `from`, in the order entered.
    fn find(&self, from: usize, pred: &dyn Fn(&str) -> bool) -> Option<usize> {
        let mut todo = vec![from];
        while let Some(n) = todo.pop() {
            if n != from && pred(&self.names[n]) {
                return Some(n);
            }
            todo.extend(self.children[n].iter().rev());
        }
        None
    }

    /// Functions entered under `n` (not counting `n`).
    fn descendants(&self, n: usize) -> usize {
        self.children[n]
            .iter()
            .map(|&c| 1 + self.descendants(c))
            .sum()
    }

    fn child_names(&self, n: usize) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for &c in &self.children[n] {
            *m.entry(self.names[c].clone()).or_default() += 1;
        }
        m
    }
}

/// What one traced test run (one packet) entered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    /// The program's own calls into the kernel, by function.
    pub direct: BTreeMap<String, usize>,
    /// Functions entered inside those calls, the calls themselves included.
    pub nested: usize,
    /// Functions entered under the test-run entry (harness and program).
    pub test_run: usize,
    /// How the program's frame was found.
    pub frame: String,
}

/// The program's calls in the trace `prog`, the empty program's run traced
/// the same way in `empty` (the harness alone).
pub fn program_calls(prog: &Graph, empty: &Graph) -> Result<Traced, String> {
    let entry = |g: &Graph| {
        g.find(0, &|n| n == TEST_RUN_ENTRY)
            .ok_or_else(|| format!("{TEST_RUN_ENTRY} is not in the trace"))
    };
    let (t, te) = (entry(prog)?, entry(empty)?);
    let test_run = 1 + prog.descendants(t);
    // The JIT-compiled program is not traced: its calls hang under the
    // function that invoked it. The innermost dispatcher function, where
    // the kernel traces one, invokes nothing else.
    let is_dispatcher = |n: &str| n.starts_with(DISPATCHER);
    if let Some(mut d) = prog.find(t, &is_dispatcher) {
        while let Some(inner) = prog.children[d]
            .iter()
            .copied()
            .find(|&c| is_dispatcher(&prog.names[c]))
        {
            d = inner;
        }
        return Ok(Traced {
            direct: prog.child_names(d),
            nested: prog.descendants(d),
            test_run,
            frame: prog.names[d].clone(),
        });
    }
    // Otherwise the calls hang under the test-run loop beside the
    // harness's: what the empty program's loop does not call is the
    // program's.
    let (l, le) = match (
        prog.find(t, &|n| n == TEST_RUN_LOOP),
        empty.find(te, &|n| n == TEST_RUN_LOOP),
    ) {
        (Some(l), Some(le)) => (l, le),
        _ => return Err(format!("{TEST_RUN_LOOP} is not in the trace")),
    };
    let harness = empty.child_names(le);
    let mut direct = prog.child_names(l);
    for (name, n) in &harness {
        if let Some(c) = direct.get_mut(name) {
            *c = c.saturating_sub(*n);
        }
    }
    direct.retain(|_, c| *c > 0);
    Ok(Traced {
        direct,
        nested: prog.descendants(l).saturating_sub(empty.descendants(le)),
        test_run,
        frame: format!("{TEST_RUN_LOOP} less the empty program's"),
    })
}

/// Our own tracefs instance (nothing global is changed); removed on drop.
pub struct Tracer {
    dir: PathBuf,
}

impl Tracer {
    /// An instance that offers function_graph, or why there is none.
    pub fn open() -> Result<Tracer, String> {
        let root = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("available_tracers").exists())
            .ok_or("tracefs is not mounted (no /sys/kernel/tracing)")?;
        let tracers = |d: &Path| std::fs::read_to_string(d.join("available_tracers"));
        let top = tracers(root).map_err(|e| format!("reading available_tracers: {e}"))?;
        if !top.split_whitespace().any(|t| t == "function_graph") {
            return Err(format!(
                "function_graph is not among this kernel's tracers (available_tracers: {})",
                top.trim()
            ));
        }
        let dir = root
            .join("instances")
            .join(format!("xe-bench-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .map_err(|e| format!("creating the tracefs instance {}: {e}", dir.display()))?;
        let t = Tracer { dir };
        let mine = tracers(&t.dir).unwrap_or_default();
        if !mine.split_whitespace().any(|x| x == "function_graph") {
            return Err(format!(
                "a tracefs instance does not offer function_graph (its tracers: {})",
                mine.trim()
            ));
        }
        Ok(t)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        let path = self.dir.join(file);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
    }

    /// Traces the calling thread with function_graph until the session
    /// is dropped (interrupts left out).
    pub fn session(&self) -> Result<Session<'_>, String> {
        let s = Session(self);
        self.write("tracing_on", "0")?;
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::gettid() };
        self.write("set_ftrace_pid", &tid.to_string())?;
        self.write("current_tracer", "function_graph")?;
        if self.dir.join("options/funcgraph-irqs").exists() {
            self.write("options/funcgraph-irqs", "0")?;
        }
        Ok(s)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.write("tracing_on", "0");
        let _ = self.write("current_tracer", "nop");
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!(
                "warning: removing the tracefs instance {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// function_graph on in our instance; back to nop on drop.
pub struct Session<'a>(&'a Tracer);

impl Session<'_> {
    /// The trace of `run` alone: the outer error is the run's, the inner
    /// one the tracer's.
    pub fn capture(&self, run: &mut dyn FnMut() -> Result<()>) -> Result<Result<String, String>> {
        let t = self.0;
        if let Err(e) = t
            .write("trace", "")
            .and_then(|()| t.write("tracing_on", "1"))
        {
            return Ok(Err(e));
        }
        let r = run();
        let off = t.write("tracing_on", "0");
        r?;
        Ok(off.and_then(|()| {
            std::fs::read_to_string(t.dir.join("trace")).map_err(|e| format!("reading trace: {e}"))
        }))
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self.0.write("tracing_on", "0");
        let _ = self.0.write("current_tracer", "nop");
        let _ = self.0.write("set_ftrace_pid", "");
    }
}

/// One program whose calls are counted: its name, its fd, and one test
/// run of one packet that fails unless the program does what it should
/// (forward, or for the empty program, return its verdict).
pub struct Subject<'a> {
    pub name: &'static str,
    pub fd: BorrowedFd<'a>,
    pub run: Box<dyn FnMut() -> Result<()> + 'a>,
}

/// The name of the program that shows the harness alone.
pub const EMPTY: &str = "empty program";

const COLUMNS: [&str; 8] = [
    "program",
    "family",
    "call insns (static)",
    "static targets",
    "kernel calls per packet (traced)",
    "functions entered per packet (traced)",
    "traced calls",
    "functions in the test run (traced)",
];

/// The calls table, filled family by family.
pub struct Calls {
    syms: Symbols,
    table: Table,
    frames: Vec<String>,
    unavailable: Option<String>,
}

fn list(m: &BTreeMap<String, usize>) -> String {
    let mut v: Vec<(&String, &usize)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    if v.is_empty() {
        return "none".into();
    }
    v.iter()
        .map(|(n, c)| format!("{c}x {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Calls {
    pub fn new() -> Self {
        Calls {
            syms: Symbols::load(),
            table: Table::new(
                "prog_calls",
                "calls into the kernel per forwarded packet: call instructions in the verifier's translated program (static, every path), and the kernel functions one forwarded 64-byte UDP packet enters (one BPF_PROG_TEST_RUN, repeat 1, traced with function_graph)",
                &COLUMNS,
            ),
            frames: Vec::new(),
            unavailable: None,
        }
    }

    /// Counts the calls of every subject, for `family` at `routes` routes;
    /// `subjects` includes the empty program ([`EMPTY`]).
    pub fn family(
        &mut self,
        family: &str,
        routes: u32,
        subjects: &mut [Subject<'_>],
    ) -> Result<()> {
        let fam = format!("{family}, {routes} routes");
        let traced = self.trace(subjects)?;
        for (i, s) in subjects.iter().enumerate() {
            let st = static_calls(s.fd, &self.syms)?;
            let mut targets = list(&st.targets);
            if st.subprograms > 0 {
                targets.push_str(&format!(" (and {} subprogram calls)", st.subprograms));
            }
            let mut row: Vec<Cell> = vec![
                text(s.name),
                text(&fam),
                num(st.kernel_calls() as f64, 0),
                text(targets),
            ];
            match &traced {
                Ok(t) => {
                    let t = &t[i];
                    row.push(num(t.direct.values().sum::<usize>() as f64, 0));
                    row.push(num(t.nested as f64, 0));
                    row.push(text(list(&t.direct)));
                    row.push(num(t.test_run as f64, 0));
                    if !self.frames.contains(&t.frame) {
                        self.frames.push(t.frame.clone());
                    }
                }
                Err(_) => row.extend((0..4).map(|_| text("-"))),
            }
            self.table.row(row);
        }
        if let Err(why) = traced {
            self.unavailable.get_or_insert(why);
        }
        Ok(())
    }

    /// One traced packet per subject, or why none could be traced.
    fn trace(&self, subjects: &mut [Subject<'_>]) -> Result<Result<Vec<Traced>, String>> {
        // The instance lives for this family's traced runs only.
        let tracer = match Tracer::open() {
            Ok(t) => t,
            Err(why) => return Ok(Err(why)),
        };
        let session = match tracer.session() {
            Ok(s) => s,
            Err(why) => return Ok(Err(why)),
        };
        let mut graphs = Vec::new();
        for s in subjects.iter_mut() {
            // A first run outside the trace: the traced packet meets warm
            // tables, as every measured packet does.
            (s.run)()?;
            match session.capture(&mut s.run)? {
                Ok(trace) => graphs.push(Graph::parse(&trace)),
                Err(why) => return Ok(Err(why)),
            }
        }
        drop(session);
        let Some(e) = subjects.iter().position(|s| s.name == EMPTY) else {
            bail!("the calls table needs the empty program among its subjects");
        };
        let mut out = Vec::new();
        for g in &graphs {
            match program_calls(g, &graphs[e]) {
                Ok(t) => out.push(t),
                Err(why) => return Ok(Err(why)),
            }
        }
        Ok(Ok(out))
    }

    pub fn table(mut self) -> Table {
        if let Some(why) = &self.unavailable {
            let mut row = vec![text("function_graph trace"), text("-")];
            row.extend((0..5).map(|_| text("-")));
            row.push(text(format!("not measured: {why}")));
            self.table.row(row);
        }
        let frames = if self.frames.is_empty() {
            String::new()
        } else {
            format!(" (in this run: {})", self.frames.join("; "))
        };
        self.table.note(
            "Static: every call instruction in the program as the verifier left it (BPF_OBJ_GET_INFO_BY_FD, xlated instructions), on every path, named as bpftool names them (the instruction's immediate plus __bpf_call_base, looked up in /proc/kallsyms). Helpers the verifier inlines (array map lookups among them) are no call and do not appear; map operations it calls directly appear under their kernel function; calls of the program's own subprograms are not calls into the kernel and are listed apart.",
        );
        self.table.note(format!(
            "Traced: after one untraced run, one more test run of one packet (repeat 1, the same frame and tables as the cost tables at their largest route count) under ftrace's function_graph tracer in a tracefs instance of our own, filtered to this thread (set_ftrace_pid), interrupts left out; the instance is removed afterwards. The run must forward the packet (XDP_REDIRECT, TTL one lower), the empty program's must return XDP_PASS. The JIT-compiled program is not traced itself, so its calls appear as children of the function that invoked it: the innermost XDP dispatcher function where the kernel traces one; otherwise the test-run loop ({TEST_RUN_LOOP}) less what the empty program's loop calls in the same trace, the harness's frame set-up and timing{frames}. Kernel calls per packet: those direct calls; functions entered: those calls and every function nested in them; the test run: everything under {TEST_RUN_ENTRY}, the harness's part being what the empty program's row shows. ftrace sees only functions it can trace (not inlined or notrace ones)."
        ));
        self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HARNESS: &str = "\
# tracer: function_graph
#
# CPU  DURATION                  FUNCTION CALLS
# |     |   |                     |   |   |   |
 0)   0.120 us    |  } /* ksys_write */
 0)               |  __x64_sys_bpf() {
 0)               |    __sys_bpf() {
 0)               |      bpf_prog_test_run_xdp() {
 0)   0.150 us    |        __kmalloc_noprof();
 0)               |        bpf_test_run() {
 0)   0.090 us    |          migrate_disable();
 0)   0.080 us    |          ktime_get_ns();
";

    fn trace(program: &str, tail: &str) -> Graph {
        Graph::parse(&format!(
            "{HARNESS}{program} 0)   0.080 us    |          ktime_get_ns();\n 0)   0.090 us    |          migrate_enable();\n 0) + 10.00 us    |        }}\n{tail} 0)   0.300 us    |        kfree();\n 0)   20.00 us    |      }}\n 0)   21.00 us    |    }}\n"
        ))
    }

    const FIB: &str = "\
 0)               |          bpf_xdp_fib_lookup() {
 0)               |            bpf_ipv4_fib_lookup() {
 0)   0.500 us    |              fib_table_lookup();
 0)   0.100 us    |              __ipv4_neigh_lookup_noref(); /* = 0x0 */
 0)   0.900 us    |            }
 0)   1.000 us    |          }
 0)   0.200 us    |          dev_map_hash_redirect();
";

    #[test]
    fn program_calls_are_the_dispatcher_frames_children() {
        let prog = trace(
            &format!(" 0)               |          bpf_dispatcher_xdp_func() {{\n{FIB} 0)   2.000 us    |          }}\n"),
            "",
        );
        let empty = trace(
            " 0)   0.050 us    |          bpf_dispatcher_xdp_func();\n",
            "",
        );
        let t = program_calls(&prog, &empty).expect("traced");
        assert_eq!(t.frame, "bpf_dispatcher_xdp_func");
        assert_eq!(
            list(&t.direct),
            "1x bpf_xdp_fib_lookup, 1x dev_map_hash_redirect"
        );
        assert_eq!(t.nested, 5);
        // entry, kmalloc, loop (+4 harness, dispatcher +5), kfree
        assert_eq!(t.test_run, 1 + 1 + 1 + 4 + 1 + 5 + 1);
        let none = program_calls(&empty, &empty).expect("traced");
        assert!(none.direct.is_empty() && none.nested == 0, "{none:?}");
    }

    #[test]
    fn without_a_dispatcher_frame_the_harness_is_the_empty_programs_loop() {
        let prog = trace(FIB, "");
        let empty = trace("", "");
        let t = program_calls(&prog, &empty).expect("traced");
        assert_eq!(
            list(&t.direct),
            "1x bpf_xdp_fib_lookup, 1x dev_map_hash_redirect"
        );
        assert_eq!(t.nested, 5);
        assert!(program_calls(&Graph::parse("nothing"), &empty).is_err());
    }

    #[test]
    fn xlated_calls_are_named_and_grouped() {
        let syms = Symbols {
            by_addr: HashMap::from([
                (0x1000 + 0x40, "bpf_xdp_redirect_map".to_string()),
                (0x1000 - 0x80, "__htab_map_lookup_elem".to_string()),
            ]),
            call_base: Some(0x1000),
        };
        let insn = |code: u8, src: u8, imm: i32| {
            let mut b = vec![code, src << 4, 0, 0];
            b.extend(imm.to_ne_bytes());
            b
        };
        let prog: Vec<u8> = [
            insn(0xb7, 0, 2),
            insn(CALL, 0, -0x80),
            insn(CALL, 0, -0x80),
            insn(CALL, PSEUDO_CALL, 3),
            insn(CALL, 0, 0x40),
            insn(CALL, 0, FUNC_TAIL_CALL),
            insn(0x95, 0, 0),
        ]
        .concat();
        let s = calls_in(&prog, &syms);
        assert_eq!(s.kernel_calls(), 4);
        assert_eq!(s.subprograms, 1);
        assert_eq!(
            list(&s.targets),
            "2x __htab_map_lookup_elem, 1x bpf_tail_call, 1x bpf_xdp_redirect_map"
        );
    }
}
