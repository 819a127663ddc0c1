//! The `own_swarm` example, run as a test: `KadBehaviour` composed with ping in a swarm of
//! the user's own, over TCP on 127.0.0.1.

#[path = "../examples/own_swarm.rs"]
mod own_swarm;

#[tokio::test]
async fn kad_composes_with_ping_in_a_users_own_swarm() {
    own_swarm::run()
        .await
        .expect("the example's requests are answered");
}
