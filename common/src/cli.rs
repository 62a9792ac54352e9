//! The command-line habits every Palisade program shares: `--help` and
//! `--version` end with 0, a usage error with 64 ([`Exit::Usage`]); and a
//! way to check a documented command line without running it (the docs
//! test runs every line the documentation shows through it).

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use crate::exit::Exit;

/// Parses the process's arguments; on `--help`, `--version` or a usage
/// error, clap's text is printed and the exit code to end with returned.
pub fn parse<C: Parser>() -> Result<C, ExitCode> {
    C::try_parse().map_err(|e| {
        let _ = e.print();
        usage_exit(&e)
    })
}

/// As [`parse`], but a usage error is one line on standard error,
/// `PROGRAM: reason (see --help)`, like every other error of a program
/// whose output scripts read (`palisadectl`).
pub fn parse_one_line<C: Parser>(program: &str) -> Result<C, ExitCode> {
    C::try_parse().map_err(|e| {
        if e.use_stderr() {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!(
                "{program}: {} (see --help)",
                first.strip_prefix("error: ").unwrap_or(first)
            );
        } else {
            let _ = e.print();
        }
        usage_exit(&e)
    })
}

fn usage_exit(e: &clap::Error) -> ExitCode {
    if e.use_stderr() {
        Exit::Usage
    } else {
        Exit::Success
    }
    .into()
}

/// Whether `args` (program name first) is a valid command line for `C`;
/// the error as clap words it.
pub fn check_args<C, I, T>(args: I) -> Result<(), String>
where
    C: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    C::try_parse_from(args)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Demo {
        #[arg(long)]
        flag: bool,
    }

    #[test]
    fn check_args_accepts_and_refuses() {
        assert!(check_args::<Demo, _, _>(["demo", "--flag"]).is_ok());
        let e = check_args::<Demo, _, _>(["demo", "--nope"]).unwrap_err();
        assert!(e.contains("--nope"), "{e}");
    }
}
