//! `palisade-manager`.

fn main() -> std::process::ExitCode {
    palisade_manager::cli::main()
}
