//! A local transport client for the trust tests (#14): run as an
//! unprivileged user, it registers a name and sends the frames it is given,
//! printing what transportd answered. Not part of the product.
//!
//! ```text
//! forge SOCKET NAME [STEP...]
//! STEP = request:PNN:SERVICE:OPCODE:HEX | event:PNN:SERVICE:OPCODE:HEX
//!      | flood:COUNT:CONCURRENCY:PNN:SERVICE:OPCODE:HEX
//!      | connect:COUNT:HOLD_MS
//! ```
//!
//! `flood` sends the request COUNT times with at most CONCURRENCY waiting
//! for their answers and prints `flood ok=N refused=N other=N ms=N`, then
//! the first refusal and the first other error; `connect` opens COUNT more
//! connections (each registers a name), holds those that got in for
//! HOLD_MS and prints `connect ok=N refused=N`, then the first refusal
//! (the flood tests, #14 item 2).
//!
//! PNN is a number, `local` or `all`; SERVICE a number or `broadcast`;
//! OPCODE a number (`0x...` allowed); HEX the encoded payload (may be
//! empty). Output, one line per step after `register ok PNN SERVICE` (or
//! `register refused: ...`, exit 2): `reply ok HEX`, `reply err ERROR`, or
//! `event sent`. Exit 1 on bad arguments.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use transport::client::Client;
use transport::proto::{Address, ALL_NODES, BROADCAST_SERVICE, LOCAL};

/// A local transport client for the trust tests: registers NAME on
/// transportd's SOCKET and sends the STEPs, printing what transportd
/// answered (exit 2: registration refused; exit 1: bad arguments).
#[derive(Debug, Parser)]
#[command(name = "forge")]
struct Args {
    /// transportd's local socket.
    socket: String,
    /// The service name to register.
    name: String,
    /// request:PNN:SERVICE:OPCODE:HEX | event:PNN:SERVICE:OPCODE:HEX |
    /// flood:COUNT:CONCURRENCY:PNN:SERVICE:OPCODE:HEX | connect:COUNT:HOLD_MS
    steps: Vec<String>,
}

enum Step {
    Request(Address, u32, Vec<u8>),
    Event(Address, u32, Vec<u8>),
    Flood {
        count: u64,
        concurrency: u64,
        dst: Address,
        opcode: u32,
        payload: Vec<u8>,
    },
    Connect {
        count: u64,
        hold: Duration,
    },
}

fn number(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("{text:?}: {e}"))
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err(format!("odd hex length in {text:?}"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| format!("bad hex {text:?}"))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_step(arg: &str) -> Result<Step, String> {
    if let Some(rest) = arg.strip_prefix("connect:") {
        let (count, hold) = rest
            .split_once(':')
            .ok_or_else(|| format!("{arg:?}: want connect:COUNT:HOLD_MS"))?;
        return Ok(Step::Connect {
            count: number(count)?,
            hold: Duration::from_millis(number(hold)?),
        });
    }
    if let Some(rest) = arg.strip_prefix("flood:") {
        let mut it = rest.splitn(3, ':');
        let (Some(count), Some(concurrency), Some(request)) = (it.next(), it.next(), it.next())
        else {
            return Err(format!(
                "{arg:?}: want flood:COUNT:CONCURRENCY:PNN:SERVICE:OPCODE:HEX"
            ));
        };
        let Step::Request(dst, opcode, payload) = parse_step(&format!("request:{request}"))? else {
            return Err(format!("{arg:?}: not a request"));
        };
        return Ok(Step::Flood {
            count: number(count)?,
            concurrency: number(concurrency)?.max(1),
            dst,
            opcode,
            payload,
        });
    }
    let parts: Vec<&str> = arg.splitn(5, ':').collect();
    let [kind, pnn, service, opcode, payload] = parts[..] else {
        return Err(format!("{arg:?}: want KIND:PNN:SERVICE:OPCODE:HEX"));
    };
    let pnn = match pnn {
        "local" => LOCAL,
        "all" => ALL_NODES,
        n => u32::try_from(number(n)?).map_err(|e| format!("pnn {n}: {e}"))?,
    };
    let service = match service {
        "broadcast" => BROADCAST_SERVICE,
        s => u16::try_from(number(s)?).map_err(|e| format!("service {s}: {e}"))?,
    };
    let opcode = u32::try_from(number(opcode)?).map_err(|e| format!("opcode: {e}"))?;
    let payload = unhex(payload)?;
    let dst = Address::new(pnn, service);
    match kind {
        "request" => Ok(Step::Request(dst, opcode, payload)),
        "event" => Ok(Step::Event(dst, opcode, payload)),
        k => Err(format!("kind {k:?}: want request or event")),
    }
}

fn main() -> ExitCode {
    let Args {
        socket,
        name,
        steps,
    } = match Args::try_parse() {
        Ok(a) => a,
        // Bad arguments exit 1 (exit 2 means "registration refused").
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(1);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let (socket, name) = (socket.as_str(), name.as_str());
    let steps: Result<Vec<Step>, String> = steps.iter().map(|s| parse_step(s)).collect();
    let steps = match steps {
        Ok(s) => s,
        Err(e) => {
            eprintln!("forge: {e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("forge: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let client = match Client::connect_unix(socket, name).await {
            Ok((c, _incoming)) => c,
            Err(e) => {
                println!("register refused: {e}");
                return ExitCode::from(2);
            }
        };
        println!("register ok {} {}", client.pnn(), client.service());
        for step in steps {
            match step {
                Step::Request(dst, op, payload) => {
                    match client
                        .request_raw(dst, op, payload, Duration::from_secs(5))
                        .await
                    {
                        Ok(m) => println!("reply ok {}", hex(&m.payload)),
                        Err(e) => println!("reply err {e}"),
                    }
                }
                Step::Event(dst, op, payload) => match client.event_raw(dst, op, payload).await {
                    Ok(()) => println!("event sent"),
                    Err(e) => println!("event failed: {e}"),
                },
                Step::Flood {
                    count,
                    concurrency,
                    dst,
                    opcode,
                    payload,
                } => flood(&client, count, concurrency, dst, opcode, &payload).await,
                Step::Connect { count, hold } => connect(socket, count, hold).await,
            }
        }
        // Let transportd read the last events before the connection ends.
        tokio::time::sleep(Duration::from_millis(200)).await;
        ExitCode::SUCCESS
    })
}

/// Sends one request `count` times, at most `concurrency` waiting.
async fn flood(
    client: &Client,
    count: u64,
    concurrency: u64,
    dst: Address,
    opcode: u32,
    payload: &[u8],
) {
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let (mut ok, mut refused, mut other) = (0u64, 0u64, 0u64);
    let (mut first_refused, mut first_other) = (None, None);
    let mut sent = 0u64;
    while sent < count || !tasks.is_empty() {
        while sent < count && (tasks.len() as u64) < concurrency {
            let (c, p) = (client.clone(), payload.to_vec());
            tasks
                .spawn(async move { c.request_raw(dst, opcode, p, Duration::from_secs(10)).await });
            sent += 1;
        }
        match tasks.join_next().await {
            Some(Ok(Ok(_))) => ok += 1,
            Some(Ok(Err(transport::client::ClientError::Remote { error, .. })))
                if error.code == transport::proto::ErrorCode::Refused =>
            {
                refused += 1;
                first_refused.get_or_insert(error.message);
            }
            Some(Ok(Err(e))) => {
                other += 1;
                first_other.get_or_insert(e.to_string());
            }
            Some(Err(e)) => {
                other += 1;
                first_other.get_or_insert(e.to_string());
            }
            None => break,
        }
    }
    println!(
        "flood ok={ok} refused={refused} other={other} ms={}",
        started.elapsed().as_millis()
    );
    println!("first refusal: {}", first_refused.unwrap_or_default());
    println!("first other: {}", first_other.unwrap_or_default());
}

/// Opens `count` more connections, holds those that got in for `hold`.
async fn connect(socket: &str, count: u64, hold: Duration) {
    let mut held = Vec::new();
    let (mut ok, mut refused) = (0u64, 0u64);
    let mut first = None;
    for i in 0..count {
        match Client::connect_unix(socket, &format!("flood-{i}")).await {
            Ok(c) => {
                ok += 1;
                held.push(c);
            }
            Err(e) => {
                refused += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    println!("connect ok={ok} refused={refused}");
    println!("first refusal: {}", first.unwrap_or_default());
    tokio::time::sleep(hold).await;
    drop(held);
}
