//! The `shoal` executable: all the work is in the library.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(shoal::main(std::env::args_os()))
}
