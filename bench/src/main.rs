//! `zkbench`: what the Zymkey PKCS#11 module costs, beside its peers, in one
//! run and one table:
//! - ECDSA P-256 signatures per second in one process ([`inprocess`]): raw
//!   OpenSSL, SoftHSM2 through PKCS#11, the module over the emulator at 0 ms
//!   with 1, 2 and 4 threads;
//! - the cost of one use when each use is a process ([`processes`]):
//!   `openssl pkeyutl -sign` and a `curl` mutual-TLS request, token key against
//!   key file, at 0 ms and at the device latency, with the device operations
//!   per process (from the emulator's trace) and peak memory;
//! - the device agent (`zkiot device agent`, [`agent`]) when `--zkiot` names the tool: its
//!   device operations while idle and while it serves an app's credentials requests from
//!   what it holds, and its peak memory.
//!
//! The emulator's `ZKIOT_EMU_LATENCY_MS` stands in for the device: a Zymkey
//! takes tens of milliseconds per operation, so at that latency what counts is
//! how many operations a process makes. Under the table come the targets of
//! the project, each met or not: device operations per process, the ratios at
//! the device latency, threads and memory. Then the watched figures, which
//! have no target: signatures per second against raw OpenSSL and SoftHSM2, and
//! the per-process ratios at 0 ms. Those measure the emulator and the loading
//! of libraries, not what a user of a Zymkey waits for, but a slower module
//! shows in them first. Every ratio is against its peer from the same run.
//! `--smoke` runs every row briefly and checks the device-operation counts
//! (one device signature per signature, at most two device operations per
//! signing process), never timings.

mod agent;
mod inprocess;
mod processes;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use inprocess::Throughput;
use processes::{Consumer, Key, PerProcess, Setup};

const USAGE: &str = "\
usage: zkbench --module PATH --emulator PATH [--softhsm PATH] [--zkiot PATH] [--seconds S]
               [--latency-ms MS] [--smoke]

  --module      libzkpkcs11.so to measure
  --emulator    libzkemu.so the module loads (ZKIOT_ZKLIB)
  --softhsm     SoftHSM2 module, the software peer (default /usr/lib/softhsm/libsofthsm2.so)
  --zkiot       the zkiot tool whose device agent to measure (no agent rows without it)
  --seconds     time per row (default 3)
  --latency-ms  emulated device time per operation for the latency rows (default 50)
  --smoke       every row, briefly; fails if a device-operation count is wrong
";

/// Threads of the module's in-process rows.
const THREADS: [usize; 3] = [1, 2, 4];

#[derive(Debug, Clone)]
pub struct Options {
    pub module: PathBuf,
    pub emulator: PathBuf,
    pub softhsm: PathBuf,
    pub zkiot: Option<PathBuf>,
    pub seconds: f64,
    pub latency_ms: u64,
    pub smoke: bool,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("zkbench: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut case = None;
    let mut module = None;
    let mut emulator = None;
    let mut softhsm = PathBuf::from("/usr/lib/softhsm/libsofthsm2.so");
    let mut zkiot = None;
    let mut seconds = 3.0;
    let mut latency_ms = 50;
    let mut smoke = false;
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--case" => case = Some(value()?),
            "--module" => module = Some(PathBuf::from(value()?)),
            "--emulator" => emulator = Some(PathBuf::from(value()?)),
            "--softhsm" => softhsm = PathBuf::from(value()?),
            "--zkiot" => zkiot = Some(PathBuf::from(value()?)),
            "--seconds" => seconds = value()?.parse().context("--seconds")?,
            "--latency-ms" => latency_ms = value()?.parse().context("--latency-ms")?,
            "--smoke" => smoke = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let mut options = Options {
        module: module.context("--module is required")?,
        emulator: emulator.context("--emulator is required")?,
        softhsm,
        zkiot,
        seconds,
        latency_ms: latency_ms.max(1),
        smoke,
    };
    if smoke {
        options.seconds = 0.1;
    }
    match case {
        Some(name) => {
            let case = inprocess::Case::from_argument(&name)
                .with_context(|| format!("unknown case {name}"))?;
            println!("{}", case.measure(&options)?.to_json());
            Ok(())
        }
        None => compare(&options),
    }
}

/// Runs an in-process case in a child process of its own.
fn throughput(case: inprocess::Case, o: &Options) -> Result<Throughput> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--case", &case.argument()])
        .arg("--module")
        .arg(&o.module)
        .arg("--emulator")
        .arg(&o.emulator)
        .arg("--softhsm")
        .arg(&o.softhsm)
        .args(["--seconds", &o.seconds.to_string()])
        .output()
        .context("running a case")?;
    if !out.status.success() {
        bail!(
            "case {} failed: {}",
            case.argument(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    Throughput::from_json(&line)
        .with_context(|| format!("case {} printed {line:?}", case.argument()))
}

/// Runs `cases` in turns of `SLICES` slices each (one in a smoke run) and
/// adds up each case's slices.
fn interleaved(cases: &[inprocess::Case], o: &Options) -> Result<Vec<Throughput>> {
    const SLICES: usize = 3;
    let slices = if o.smoke { 1 } else { SLICES };
    let slice = Options {
        seconds: o.seconds / slices as f64,
        ..o.clone()
    };
    let mut totals = vec![
        Throughput {
            signatures: 0,
            seconds: 0.0,
            device_signatures: Some(0),
        };
        cases.len()
    ];
    for _ in 0..slices {
        for (case, total) in cases.iter().zip(totals.iter_mut()) {
            let t = throughput(*case, &slice)?;
            total.signatures += t.signatures;
            total.seconds += t.seconds;
            total.device_signatures = match (total.device_signatures, t.device_signatures) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
    }
    Ok(totals)
}

/// One line of the table.
struct Row {
    case: String,
    value: String,
    versus: String,
    device_ops: String,
    peak: String,
}

impl Row {
    fn print(&self) {
        println!(
            "{:<40} {:>11} {:<34} {:<26} {:>9}",
            self.case, self.value, self.versus, self.device_ops, self.peak
        );
    }
}

/// A target of the project: the measured ratio and whether it is met.
struct Target {
    what: String,
    measured: String,
    met: bool,
}

/// A figure watched from run to run, with no target to meet.
struct Watched {
    what: String,
    measured: String,
}

fn compare(o: &Options) -> Result<()> {
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let mut watched = Vec::new();
    let mut smoke_errors = Vec::new();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };

    // Signatures per second, in one process: the cases take turns, in
    // slices, so that they share the load of the machine.
    let mut cases = vec![
        inprocess::Case::OpenSsl { threads: 1 },
        inprocess::Case::OpenSsl { threads: 2 },
    ];
    if o.softhsm.exists() {
        cases.push(inprocess::Case::SoftHsm);
    } else {
        eprintln!(
            "zkbench: {} not found, SoftHSM2 rows skipped",
            o.softhsm.display()
        );
    }
    cases.extend(
        THREADS
            .iter()
            .map(|&threads| inprocess::Case::Module { threads }),
    );
    let measured = interleaved(&cases, o)?;
    let result = |case: inprocess::Case| cases.iter().position(|c| *c == case).map(|i| measured[i]);
    let openssl = result(inprocess::Case::OpenSsl { threads: 1 }).context("OpenSSL row")?;
    let openssl_2 = result(inprocess::Case::OpenSsl { threads: 2 }).context("OpenSSL row")?;
    let softhsm = result(inprocess::Case::SoftHsm);
    let module: Vec<(usize, Throughput)> = THREADS
        .iter()
        .filter_map(|&threads| Some((threads, result(inprocess::Case::Module { threads })?)))
        .collect();
    let rate = |t: &Throughput| format!("{:.0}/s", t.per_second());
    let versus_openssl = |t: &Throughput| {
        let mut text = format!(
            "{:.2}x OpenSSL",
            ratio(t.per_second(), openssl.per_second())
        );
        if let Some(s) = &softhsm {
            text += &format!(", {:.2}x SoftHSM2", ratio(t.per_second(), s.per_second()));
        }
        text
    };
    rows.push(Row {
        case: inprocess::Case::OpenSsl { threads: 1 }.describe(),
        value: rate(&openssl),
        versus: String::new(),
        device_ops: String::new(),
        peak: String::new(),
    });
    rows.push(Row {
        case: inprocess::Case::OpenSsl { threads: 2 }.describe(),
        value: rate(&openssl_2),
        versus: format!(
            "{:.2}x 1 thread",
            ratio(openssl_2.per_second(), openssl.per_second())
        ),
        device_ops: String::new(),
        peak: String::new(),
    });
    if let Some(s) = &softhsm {
        rows.push(Row {
            case: inprocess::Case::SoftHsm.describe(),
            value: rate(s),
            versus: format!(
                "{:.2}x OpenSSL",
                ratio(s.per_second(), openssl.per_second())
            ),
            device_ops: String::new(),
            peak: String::new(),
        });
    }
    let one_thread = module[0].1;
    for (threads, t) in &module {
        let signs = t.device_signatures.unwrap_or(0);
        if signs != t.signatures {
            smoke_errors.push(format!(
                "{} threads: {signs} device signatures for {} signatures",
                threads, t.signatures
            ));
        }
        rows.push(Row {
            case: inprocess::Case::Module { threads: *threads }.describe(),
            value: rate(t),
            versus: if *threads == 1 {
                versus_openssl(t)
            } else {
                format!(
                    "{:.2}x 1 thread",
                    ratio(t.per_second(), one_thread.per_second())
                )
            },
            device_ops: format!("{:.2} sign/sig", signs as f64 / t.signatures.max(1) as f64),
            peak: String::new(),
        });
    }
    watched.push(Watched {
        what: "module 0 ms, 1 thread / raw OpenSSL".into(),
        measured: format!(
            "{:.2}x",
            ratio(one_thread.per_second(), openssl.per_second())
        ),
    });
    if let Some(s) = &softhsm {
        watched.push(Watched {
            what: "module 0 ms, 1 thread / SoftHSM2".into(),
            measured: format!("{:.2}x", ratio(one_thread.per_second(), s.per_second())),
        });
    }
    let two = ratio(module[1].1.per_second(), one_thread.per_second());
    targets.push(Target {
        what: "module 0 ms, 2 threads >= 1.7x 1 thread".into(),
        measured: format!(
            "{two:.2}x (OpenSSL: {:.2}x)",
            ratio(openssl_2.per_second(), openssl.per_second())
        ),
        met: two >= 1.7,
    });

    // One use per process.
    let setup = Setup::new(o)?;
    let duration = Duration::from_secs_f64(o.seconds);
    let min_runs = if o.smoke { 2 } else { 5 };
    let latency = o.latency_ms as f64 / 1000.0;
    for consumer in [Consumer::Pkeyutl, Consumer::Curl] {
        let mut keys = vec![Key::File];
        if consumer == Consumer::Pkeyutl && setup.has_softhsm() {
            keys.push(Key::SoftHsm);
        }
        keys.push(Key::Token { latency_ms: 0 });
        keys.push(Key::Token {
            latency_ms: o.latency_ms,
        });
        let cases: Vec<processes::Case> = keys
            .iter()
            .map(|&key| processes::Case { consumer, key })
            .collect();
        let measured = setup.measure(&cases, duration, min_runs)?;
        let mut file: Option<PerProcess> = None;
        for (case, m) in cases.into_iter().zip(measured) {
            let key = case.key;
            let mut versus = String::new();
            if let Some(f) = &file {
                let rate_ratio = ratio(f.seconds, m.seconds);
                versus = match key {
                    Key::Token { latency_ms } if latency_ms > 0 => format!(
                        "{:.2}x (file + L); file + {:.2} L",
                        ratio(m.seconds, f.seconds + latency),
                        (m.seconds - f.seconds) / latency
                    ),
                    _ => format!("{rate_ratio:.2}x key-file rate"),
                };
                match (consumer, key) {
                    (Consumer::Curl, Key::Token { latency_ms: 0 }) => watched.push(Watched {
                        what: "curl, token key 0 ms / key-file rate".into(),
                        measured: format!("{rate_ratio:.2}x"),
                    }),
                    (Consumer::Pkeyutl, Key::Token { latency_ms: 0 }) => watched.push(Watched {
                        what: "openssl pkeyutl, token key 0 ms / key-file rate".into(),
                        measured: format!("{rate_ratio:.2}x"),
                    }),
                    (Consumer::Curl, Key::Token { .. }) => {
                        let r = ratio(m.seconds, f.seconds + latency);
                        targets.push(Target {
                            what: format!(
                                "curl, token key {} ms <= 1.2x (file + latency)",
                                o.latency_ms
                            ),
                            measured: format!("{r:.2}x"),
                            met: r <= 1.2,
                        });
                    }
                    _ => {}
                }
                if consumer == Consumer::Curl && key == (Key::Token { latency_ms: 0 }) {
                    let extra = m.peak_rss as f64 - f.peak_rss as f64;
                    targets.push(Target {
                        what: "curl peak memory, token key <= key file + 5 MiB".into(),
                        measured: format!("{:+.1} MiB", extra / MIB),
                        met: extra <= 5.0 * MIB,
                    });
                }
            }
            if let Key::Token { .. } = key {
                let ops = m.device_ops_per_process();
                let signs = m.device_op("sign");
                if ops > 2.0 {
                    smoke_errors.push(format!(
                        "{}: {ops:.2} device operations per process ({})",
                        case.describe(),
                        m.device_ops_text()
                    ));
                }
                if signs != m.processes {
                    smoke_errors.push(format!(
                        "{}: {signs} device signatures in {} processes",
                        case.describe(),
                        m.processes
                    ));
                }
                targets.push(Target {
                    what: format!("{}: device operations per process <= 2", case.describe()),
                    measured: format!("{ops:.2}"),
                    met: ops <= 2.0,
                });
            }
            rows.push(Row {
                case: case.describe(),
                value: format!("{:.1} ms", m.seconds * 1000.0),
                versus,
                device_ops: match key {
                    Key::Token { .. } => m.device_ops_text(),
                    _ => String::new(),
                },
                peak: format!("{:.1} MiB", m.peak_rss as f64 / MIB),
            });
            if key == Key::File {
                file = Some(m);
            }
        }
    }

    // The device agent.
    if let Some(zkiot) = &o.zkiot {
        let a = agent::measure(&setup, zkiot, o)?;
        let ops = |ops: &[String]| {
            if ops.is_empty() {
                "none".to_string()
            } else {
                ops.join(" ")
            }
        };
        rows.push(Row {
            case: format!("device agent idle, {} s", a.idle_seconds),
            value: String::new(),
            versus: "start, renewal pass, no request".into(),
            device_ops: ops(&a.idle_ops),
            peak: format!("{:.1} MiB", a.idle_rss as f64 / MIB),
        });
        rows.push(Row {
            case: "device agent, an app's first request".into(),
            value: format!("{:.1} ms", a.first.as_secs_f64() * 1000.0),
            versus: "fetched from the provider".into(),
            device_ops: ops(&a.first_ops),
            peak: String::new(),
        });
        rows.push(Row {
            case: format!("device agent, {} requests while valid", a.held_requests),
            value: format!("{:.2} ms", a.held_median.as_secs_f64() * 1000.0),
            versus: "median, from memory".into(),
            device_ops: ops(&a.held_ops),
            peak: format!("{:.1} MiB", a.peak_rss as f64 / MIB),
        });
        targets.push(Target {
            what: "device agent idle: device operations per hour = 0".into(),
            measured: format!("{} in {} s", a.idle_ops.len(), a.idle_seconds),
            met: a.idle_ops.is_empty(),
        });
        targets.push(Target {
            what: "device agent: an app's request while valid: device operations = 0".into(),
            measured: format!("{} in {}", a.held_ops.len(), a.held_requests),
            met: a.held_ops.is_empty(),
        });
        targets.push(Target {
            what: "device agent peak RSS <= 10 MiB".into(),
            measured: format!("{:.1} MiB", a.peak_rss as f64 / MIB),
            met: a.peak_rss as f64 <= 10.0 * MIB,
        });
        if !a.idle_ops.is_empty() || !a.held_ops.is_empty() {
            smoke_errors.push(format!(
                "device agent: device operations while idle ({}) or serving held credentials ({})",
                ops(&a.idle_ops),
                ops(&a.held_ops)
            ));
        }
    }

    println!(
        "zkbench: {} s per row, device latency L = {} ms{}",
        o.seconds,
        o.latency_ms,
        if o.smoke {
            " (smoke run: timings mean nothing)"
        } else {
            ""
        }
    );
    Row {
        case: "case".into(),
        value: "rate / time".into(),
        versus: "vs peer".into(),
        device_ops: "device ops".into(),
        peak: "peak RSS".into(),
    }
    .print();
    for row in &rows {
        row.print();
    }
    let lines = targets
        .iter()
        .map(|t| (&t.what, &t.measured))
        .chain(watched.iter().map(|w| (&w.what, &w.measured)));
    let what_width = lines.clone().map(|(what, _)| what.len()).max().unwrap_or(0);
    let measured_width = lines.map(|(_, measured)| measured.len()).max().unwrap_or(0);
    println!("targets:");
    for t in &targets {
        println!(
            "  {:<what_width$}  {:>measured_width$}  {}",
            t.what,
            t.measured,
            if t.met { "met" } else { "NOT MET" }
        );
    }
    println!("watched (no target: they measure the emulator and library loading, not the device):");
    for w in &watched {
        println!("  {:<what_width$}  {:>measured_width$}", w.what, w.measured);
    }
    if !smoke_errors.is_empty() {
        let errors = smoke_errors.join("\n  ");
        if o.smoke {
            bail!("device operation counts are wrong:\n  {errors}");
        }
        println!("device operation counts are wrong:\n  {errors}");
    }
    Ok(())
}

const MIB: f64 = 1024.0 * 1024.0;
