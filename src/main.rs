fn main() -> std::process::ExitCode {
    openmono::cli::main()
}
