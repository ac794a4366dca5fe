// TEMPORARY (branch `images`): minimal wiring for `hivesup postgres ...` until the
// lead's cli.rs lands; main's version replaces this file on merge.
use clap::Parser;

#[derive(Parser)]
#[command(name = "hivesup")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Postgres(hivesup::pgboot::PostgresArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Postgres(args) => hivesup::pgboot::run(args),
    };
    if let Err(err) = result {
        eprintln!("hivesup: {:#}", anyhow::Error::from(err));
        std::process::exit(1);
    }
}
