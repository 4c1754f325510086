fn main() {
    eprintln!("trainer: work in progress");
}
