fn main() {
    println!("switchback sim");
}
