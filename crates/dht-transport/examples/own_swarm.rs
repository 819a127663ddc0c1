//! `KadBehaviour` in a swarm of one's own, beside another protocol (ping).
//!
//! Two swarms on 127.0.0.1, each kad + ping over TCP + noise + yamux. The first is a DHT
//! server whose `InboundHandler` is a closure: it answers PING, and FIND_NODE with itself as
//! the one closer peer. The second (a client) sends it both requests through its own
//! `KadBehaviour` and prints the answers, while ping runs on the same connection.
//!
//! ```sh
//! cargo run --example own_swarm -p dht-transport
//! ```
//!
//! `tests/own_swarm.rs` runs [`run`] as a test.

#![allow(clippy::print_stdout)]

use std::time::Duration;

use anyhow::{Context, Result, bail};
use dht_proto::{Multiaddr, PeerInfo, Request, Response};
use dht_transport::{KadBehaviour, KadConfig, Mode, handler_fn};
use futures::StreamExt;
use libp2p::{
    Swarm, SwarmBuilder, identity::Keypair, noise, ping, swarm::NetworkBehaviour,
    swarm::SwarmEvent, tcp, yamux,
};

/// The user's own behaviour: kad beside ping.
#[derive(NetworkBehaviour)]
struct MyBehaviour {
    kad: KadBehaviour,
    ping: ping::Behaviour,
}

fn swarm(keypair: Keypair, kad: KadBehaviour) -> Result<Swarm<MyBehaviour>> {
    Ok(SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| MyBehaviour {
            kad,
            ping: ping::Behaviour::default(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build())
}

/// Drives `swarm` until its first listen address is known.
async fn listen(swarm: &mut Swarm<MyBehaviour>) -> Result<Multiaddr> {
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return Ok(address);
        }
    }
}

#[allow(dead_code)] // The test that includes this file calls `run` only.
#[tokio::main]
async fn main() -> Result<()> {
    run().await
}

/// The whole example: fails unless both requests get the answers the server's handler gives.
pub(crate) async fn run() -> Result<()> {
    // The server: its handler answers PING, and FIND_NODE with its own record.
    let server_key = Keypair::generate_ed25519();
    let server_id = server_key.public().to_peer_id();
    let me = std::sync::Arc::new(std::sync::OnceLock::<PeerInfo>::new());
    let answer_me = me.clone();
    let handler = handler_fn(move |from, request| {
        println!(
            "server: {} from {}",
            request.message_type(),
            from.peer.peer_id
        );
        Ok(match request {
            Request::Ping => Some(Response::Ping),
            Request::FindNode { .. } => Some(Response::FindNode {
                closer_peers: answer_me.get().cloned().into_iter().collect(),
            }),
            _ => None,
        })
    });
    let mut server = swarm(
        server_key,
        KadBehaviour::new(&KadConfig::default(), handler),
    )?;
    let addr = listen(&mut server).await?;
    let _ = me.set(PeerInfo::new(server_id, vec![addr.clone()]));
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(MyBehaviourEvent::Ping(e)) =
                server.select_next_some().await
            {
                println!("server: ping {:?}", e.result.map(|rtt| rtt.as_micros()));
            }
        }
    });

    // The client: no inbound kad (client mode), requests through its own behaviour.
    let client_kad = KadBehaviour::new(
        &KadConfig::default().with_mode(Mode::Client),
        handler_fn(|_, _| Ok(None)),
    );
    let mut client = swarm(Keypair::generate_ed25519(), client_kad)?;
    let target = PeerInfo::new(server_id, vec![addr]);
    let requests = [
        Request::Ping,
        Request::FindNode {
            key: server_id.to_bytes(),
        },
    ];
    for request in requests {
        let ty = request.message_type();
        let response = client.behaviour_mut().kad.send_request(&target, request);
        tokio::pin!(response);
        // The swarm must be driven while the answer comes.
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                tokio::select! {
                    answer = &mut response => break answer,
                    _ = client.select_next_some() => {}
                }
            }
        })
        .await
        .context("no answer within 10 s")??;
        match answer {
            Some(Response::FindNode { closer_peers }) if closer_peers.len() == 1 => {
                println!(
                    "client: {ty} answered, closer peer {}",
                    closer_peers[0].peer_id
                )
            }
            Some(Response::Ping) => println!("client: {ty} answered"),
            other => bail!("unexpected answer to {ty}: {other:?}"),
        }
    }
    Ok(())
}
