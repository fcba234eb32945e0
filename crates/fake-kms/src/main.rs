//! `fake-kms`: the fake Cloud KMS as a process, for tests in other languages (the Python
//! package's). Prints its endpoint (`http://127.0.0.1:PORT`) on stdout, then serves until
//! its stdin closes, so that it never outlives the test that started it.
#![allow(unused_crate_dependencies, reason = "the library's dependencies; this binary only starts it")]

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let kms = fake_kms::FakeKms::start().await?;
    println!("{}", kms.endpoint());
    // Serve until the parent closes our stdin (or dies).
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await??;
    Ok(())
}
