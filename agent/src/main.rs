//! `palisade-agent`.

fn main() -> std::process::ExitCode {
    palisade_agent::cli::main()
}
