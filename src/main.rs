//! The `haven` command-line tool.

use clap::{Parser, Subcommand};

/// haven: an embeddable, replicated, fault-tolerant storage engine.
#[derive(Parser)]
#[command(name = "haven", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version of the haven library this binary was built with.
    Version,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => println!("haven {}", env!("CARGO_PKG_VERSION")),
    }
}
