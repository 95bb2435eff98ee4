//! mizzenctl: mizzen's library, offline, from the command line.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mizzen's command line: the same code the operator and webhook run, without a cluster.
#[derive(Parser, Debug)]
#[command(name = "mizzenctl", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the MeshInstall CustomResourceDefinition (YAML), as generated from the Rust types.
    ///
    /// `config/crd/mizzen.io_meshinstalls.yaml` is this output; regenerate it with `hack/generate.sh`.
    Crd,
    /// Print the whole install bundle (namespace, CRD, RBAC, operator and webhook) as one multi-document YAML.
    ///
    /// `config/bundle.yaml` is this output: `kubectl apply -f config/bundle.yaml` installs mizzen.
    Bundle,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => mizzen::bundle::crd_yaml(),
        Command::Bundle => mizzen::bundle::bundle_yaml(),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mizzenctl: {error}");
            ExitCode::FAILURE
        }
    }
}
