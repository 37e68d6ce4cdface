//! The `haven` command-line tool.

mod cli;

use clap::Parser;

fn main() {
    let code = cli::run(cli::Cli::parse());
    std::process::exit(code);
}
