//! Many clients at once: exactly one winner, everyone else told who won.

use std::sync::{Arc, Barrier};

use lager_testsupport::{json_of, request};

use crate::start;

#[test]
fn sixty_four_acquirers_one_winner_per_round() {
    let b = start("race", &[]);
    let addr = b.addr();
    for round in 0..5 {
        let barrier = Arc::new(Barrier::new(64));
        let threads: Vec<_> = (0..64)
            .map(|i| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let user = format!("r{round}-client{i}");
                    barrier.wait();
                    let reply = request(
                        addr,
                        "POST",
                        "/lock",
                        Some(&format!(r#"{{"user":"{user}"}}"#)),
                    );
                    (user, reply.status, json_of(&reply))
                })
            })
            .collect();
        let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<_> = outcomes
            .iter()
            .filter(|(_, status, _)| *status == 200)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let winner = &winners[0].0;
        for (user, status, body) in &outcomes {
            if user != winner {
                assert_eq!(*status, 409, "{user}");
                assert_eq!(body["error"], format!("Box is locked by {winner}"));
                assert_eq!(body["lock"]["user"], winner.as_str());
            }
        }
        let (_, held) = b.call("GET", "/lock", None);
        assert_eq!(held["user"], winner.as_str());
        b.call(
            "POST",
            "/unlock",
            Some(&format!(r#"{{"user":"{winner}"}}"#)),
        );
    }
}
