//! `parashard run`: transactions from JSON lines onto a cluster, receipts
//! out as JSON lines. How a program in another language drives parashard.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use serde::Serialize;

use parashard::prelude::*;
use parashard::protocols::tx::TxLine;

use crate::CliError;

/// `parashard run` arguments.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct RunArgs {
    /// Transactions, one JSON object per line (`docs/JSONL.md`); `-` reads
    /// standard input.
    #[arg(long)]
    txs: PathBuf,
    /// Transactions applied first, in the same format, each of which must
    /// commit (accounts, keys, pools).
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// Where receipts go, one JSON line per valid transaction line
    /// (default: standard output).
    #[arg(long)]
    receipts: Option<PathBuf>,
    /// Shards.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Keep the cluster's state in this directory (created if missing; a
    /// later run on it continues from what committed).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The chain id signatures must cover.
    #[arg(long, default_value_t = 0)]
    chain_id: u64,
    /// Lines submitted per batch. A batch runs like one `submit_batch`:
    /// its local transactions in line order per shard, its cross-shard
    /// ones concurrently; `--batch 1` runs every line after the one before.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
}

/// A receipt as a line of output.
#[derive(Serialize)]
struct ReceiptLine<'a> {
    /// The input line it answers (1-based).
    line: usize,
    id: TxId,
    #[serde(flatten)]
    status: StatusLine<'a>,
}

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum StatusLine<'a> {
    Committed { output: &'a [Value] },
    Failed { error: &'a TxError, reason: String },
    Unknown { reason: String },
}

/// The longest line read, in bytes: a longer one is reported invalid and
/// skipped, never held in memory whole.
const MAX_LINE_BYTES: usize = 1 << 20;

/// Parsed lines: each valid one with its line number; each invalid one
/// (not UTF-8, too long, not a transaction) reported on standard error
/// with its number and reason.
fn read_lines(path: &PathBuf) -> Result<(Vec<(usize, Transaction)>, usize), CliError> {
    let mut reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| CliError::Argument(format!("{}: {e}", path.display())))?;
        Box::new(BufReader::new(file))
    };
    let io_error = |e: std::io::Error| CliError::Argument(format!("{}: {e}", path.display()));
    let (mut valid, mut invalid) = (Vec::new(), 0);
    let mut bytes = Vec::new();
    for number in 1.. {
        bytes.clear();
        let limit = MAX_LINE_BYTES as u64 + 1;
        let mut line = std::io::Read::take(reader.as_mut(), limit);
        if line.read_until(b'\n', &mut bytes).map_err(io_error)? == 0 {
            break;
        }
        let parsed = if bytes.len() > MAX_LINE_BYTES && bytes.last() != Some(&b'\n') {
            reader.skip_until(b'\n').map_err(io_error)?;
            Err(format!("longer than {MAX_LINE_BYTES} bytes"))
        } else {
            match std::str::from_utf8(&bytes) {
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => TxLine::parse(line).map_err(|e| e.to_string()),
                Err(e) => Err(format!("not UTF-8: {e}")),
            }
        };
        match parsed {
            Ok(tx) => valid.push((number, tx)),
            Err(reason) => {
                invalid += 1;
                eprintln!("{}:{number}: invalid: {reason}", path.display());
            }
        }
    }
    Ok((valid, invalid))
}

pub(crate) fn run(args: &RunArgs) -> Result<(), CliError> {
    if args.batch == 0 {
        return Err(CliError::Argument("--batch must be at least 1".into()));
    }
    let mut builder = Cluster::builder()
        .shards(args.shards)
        .chain_id(args.chain_id);
    if let Some(dir) = &args.data_dir {
        builder = builder.data_dir(dir);
    }
    let cluster = builder.start()?;
    if let Some(genesis) = &args.genesis {
        let (lines, invalid) = read_lines(genesis)?;
        if invalid > 0 {
            return Err(CliError::Argument(format!(
                "{}: {invalid} invalid lines",
                genesis.display()
            )));
        }
        for chunk in lines.chunks(args.batch) {
            let txs = chunk.iter().map(|(_, tx)| tx.clone()).collect();
            let receipts = cluster.submit_batch_blocking(txs)?;
            for ((number, _), receipt) in chunk.iter().zip(&receipts) {
                if !receipt.is_committed() {
                    return Err(CliError::Argument(format!(
                        "{}:{number}: did not commit: {}",
                        genesis.display(),
                        receipt.status
                    )));
                }
            }
        }
    }
    let (lines, invalid) = read_lines(&args.txs)?;
    let mut out: Box<dyn Write> = match &args.receipts {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| CliError::Argument(format!("{}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let (mut committed, mut failed, mut unknown) = (0, 0, 0);
    for chunk in lines.chunks(args.batch) {
        let txs = chunk.iter().map(|(_, tx)| tx.clone()).collect();
        let receipts = cluster.submit_batch_blocking(txs)?;
        for ((number, _), receipt) in chunk.iter().zip(&receipts) {
            let status = match &receipt.status {
                Status::Committed { output } => {
                    committed += 1;
                    StatusLine::Committed {
                        output: output.words(),
                    }
                }
                Status::Failed(error) => {
                    failed += 1;
                    StatusLine::Failed {
                        error,
                        reason: error.to_string(),
                    }
                }
                other => {
                    unknown += 1;
                    StatusLine::Unknown {
                        reason: other.to_string(),
                    }
                }
            };
            let line = ReceiptLine {
                line: *number,
                id: receipt.tx_id,
                status,
            };
            let text = serde_json::to_string(&line).expect("receipts serialise");
            writeln!(out, "{text}").map_err(|e| CliError::Argument(format!("receipts: {e}")))?;
        }
    }
    out.flush()
        .map_err(|e| CliError::Argument(format!("receipts: {e}")))?;
    eprintln!(
        "{} lines: {committed} committed, {failed} failed, {unknown} unknown, {invalid} invalid",
        lines.len() + invalid
    );
    cluster.shutdown();
    Ok(())
}
