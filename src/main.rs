//! The `haven` command-line tool.

mod cli;

use clap::Parser;

fn main() {
    // haven emits its events through the `log` facade; this binary prints them as logfmt lines
    // on stderr, at the level `HAVEN_LOG` names (default info).
    let _ = haven::logging::LogfmtLogger::from_env(haven::logging::LevelFilter::Info).install();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => std::process::exit(usage_error(&e)),
    };
    let code = cli::run(cli);
    std::process::exit(code);
}

/// Help and version go to stdout as clap renders them; a usage error is ONE line on stderr
/// (scripts read one line; `--help` has the rest) and exit code 2.
fn usage_error(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            cli::exit::EXIT_USAGE
        }
        _ => {
            // The message is the lines before the first blank one ("Usage: ..." follows).
            let rendered = e.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty())
                .collect();
            let message = message.join(" ");
            let first = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("haven: {first} (see haven --help)");
            cli::exit::EXIT_USAGE
        }
    }
}
