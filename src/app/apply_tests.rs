//! Scenario tests of the application's `apply` rules, on the in-memory tables.
use super::*;
use crate::app::{ClientSummary, MemTables};

/// The tables with the questions the rules are stated in, so each test reads like its rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct State(MemTables);

impl State {
    fn new() -> State {
        State::default()
    }

    fn apply(&mut self, request: &Request) -> Applied {
        apply(&mut self.0, request).expect("memory never fails")
    }

    fn client_exists(&self, client_id: &str) -> bool {
        self.0.clients.contains_key(client_id)
    }

    fn username_taken(&self, username: &str) -> bool {
        self.0.users.contains_key(username)
    }

    fn password_hash(&self, username: &str) -> Option<&str> {
        self.0.users.get(username).map(String::as_str)
    }

    fn session_valid(&self, client_id: &str, token_hash: &str) -> bool {
        session_valid(&self.0, client_id, token_hash).expect("memory never fails")
    }

    /// The old shape of the verdict: Ok(Some(index)) a retry, Ok(None) new, Err refused.
    fn check_message(
        &self,
        client_id: &str,
        token_hash: &str,
        seq: u64,
        text: &str,
    ) -> Result<Option<u64>, Rejection> {
        match check_message(&self.0, client_id, token_hash, seq, text).expect("memory") {
            MessageCheck::New => Ok(None),
            MessageCheck::Retry(index) => Ok(Some(index)),
            MessageCheck::Rejected(rejection) => Err(rejection),
        }
    }

    fn clients(&self) -> Vec<ClientSummary> {
        client_summaries(&self.0).expect("memory never fails")
    }

    fn messages(&self, from: u64, limit: u64) -> Vec<Posted> {
        board(&self.0, from, limit).expect("memory never fails")
    }

    fn client_addresses(&self) -> Vec<String> {
        client_addresses(&self.0).expect("memory never fails")
    }

    fn client_count(&self) -> u64 {
        self.0.counters.clients
    }

    fn logged_in_count(&self) -> u64 {
        self.0.counters.logged_in
    }

    fn message_count(&self) -> u64 {
        self.0.counters.messages
    }
}

const ADDR: &str = "10.0.0.1:9000";

fn req(command: Command) -> Request {
    Request {
        origin: ADDR.to_string(),
        command,
    }
}

fn init(client_id: &str, address: &str) -> Request {
    req(Command::InitClient {
        client_id: client_id.to_string(),
        address: address.to_string(),
    })
}

fn register(username: &str) -> Request {
    req(Command::Register {
        username: username.to_string(),
        password_hash: format!("$argon2id$hash-of-{username}"),
    })
}

fn login(client_id: &str, username: &str, token_hash: &str) -> Request {
    req(Command::Login {
        client_id: client_id.to_string(),
        username: username.to_string(),
        token_hash: token_hash.to_string(),
    })
}

fn logout(client_id: &str, token_hash: &str) -> Request {
    req(Command::Logout {
        client_id: client_id.to_string(),
        token_hash: token_hash.to_string(),
    })
}

fn message(client_id: &str, token_hash: &str, seq: u64, text: &str) -> Request {
    req(Command::Message {
        client_id: client_id.to_string(),
        token_hash: token_hash.to_string(),
        seq,
        text: text.to_string(),
    })
}

/// A state with client `c1` logged in as `alice` with token hash `t1`.
fn alice_logged_in() -> State {
    let mut state = State::new();
    state.apply(&init("c1", ADDR));
    state.apply(&register("alice"));
    state.apply(&login("c1", "alice", "t1"));
    state
}

/// Applies a request that must be refused, and checks that the state did not change.
fn assert_rejected(state: &mut State, request: Request) -> Rejection {
    let before = state.clone();
    let applied = state.apply(&request);
    assert_eq!(*state, before, "a rejected {request:?} changed the state");
    assert_eq!(applied.posted, None);
    match applied.outcome {
        Outcome::Rejected(rejection) => rejection,
        other => panic!("{request:?} was not rejected but gave {other:?}"),
    }
}

fn posted_index(applied: &Applied) -> u64 {
    match applied.outcome {
        Outcome::Posted { index } => index,
        ref other => panic!("expected Posted, got {other:?}"),
    }
}

/// Rule InitClient: a new client is listed with its address, no user, not logged in.
#[test]
fn init_client_adds_a_logged_out_client() {
    let mut state = State::new();
    let applied = state.apply(&init("c1", "10.0.0.1:9000"));
    assert_eq!(
        applied.outcome,
        Outcome::ClientAdded {
            client_id: "c1".to_string()
        }
    );
    assert!(state.client_exists("c1"));
    assert_eq!(
        state.clients(),
        vec![ClientSummary {
            client_id: "c1".to_string(),
            address: "10.0.0.1:9000".to_string(),
            username: None,
            logged_in: false,
        }]
    );
}

/// Rule InitClient: an existing client_id is a Conflict, and the state is unchanged.
#[test]
fn init_client_twice_is_a_conflict() {
    let mut state = State::new();
    state.apply(&init("c1", "10.0.0.1:9000"));
    let rejection = assert_rejected(&mut state, init("c1", "10.0.0.2:9000"));
    assert!(matches!(rejection, Rejection::Conflict(_)));
    assert_eq!(state.client_addresses(), vec!["10.0.0.1:9000".to_string()]);
}

/// Rule Register: a new username is stored with its hash; a taken one is a Conflict
/// (contract: 409 if taken) and leaves the first hash in place.
#[test]
fn register_stores_the_user_and_refuses_a_taken_name() {
    let mut state = State::new();
    assert!(!state.username_taken("alice"));
    let applied = state.apply(&register("alice"));
    assert_eq!(
        applied.outcome,
        Outcome::Registered {
            username: "alice".to_string()
        }
    );
    assert!(state.username_taken("alice"));
    assert_eq!(
        state.password_hash("alice"),
        Some("$argon2id$hash-of-alice")
    );
    assert_eq!(state.password_hash("bob"), None);

    let again = req(Command::Register {
        username: "alice".to_string(),
        password_hash: "$argon2id$other".to_string(),
    });
    let rejection = assert_rejected(&mut state, again);
    assert!(matches!(rejection, Rejection::Conflict(_)));
    assert_eq!(
        state.password_hash("alice"),
        Some("$argon2id$hash-of-alice")
    );
}

/// Rule Login: the client's session becomes (username, token_hash) and it is listed as
/// logged in.
#[test]
fn login_opens_a_session() {
    let state = alice_logged_in();
    assert!(state.session_valid("c1", "t1"));
    assert!(!state.session_valid("c1", "t2"));
    assert!(!state.session_valid("c2", "t1"));
    assert_eq!(state.clients()[0].username.as_deref(), Some("alice"));
    assert!(state.clients()[0].logged_in);
}

/// Rule Login: an unknown client is NotFound, an unknown user Unauthorized; neither
/// changes the state.
#[test]
fn login_refuses_unknown_client_and_unknown_user() {
    let mut state = State::new();
    state.apply(&init("c1", ADDR));
    state.apply(&register("alice"));
    let rejection = assert_rejected(&mut state, login("nobody", "alice", "t1"));
    assert!(matches!(rejection, Rejection::NotFound(_)));
    let rejection = assert_rejected(&mut state, login("c1", "mallory", "t1"));
    assert!(matches!(rejection, Rejection::Unauthorized(_)));
    assert!(!state.session_valid("c1", "t1"));
}

/// Rule Login: a second login replaces the token; the old one stops working.
#[test]
fn second_login_replaces_the_token() {
    let mut state = alice_logged_in();
    state.apply(&register("bob"));
    assert_eq!(
        state.apply(&login("c1", "bob", "t2")).outcome,
        Outcome::LoggedIn
    );
    assert!(state.session_valid("c1", "t2"));
    assert!(!state.session_valid("c1", "t1"));
    assert_eq!(state.clients()[0].username.as_deref(), Some("bob"));
    assert_eq!(state.logged_in_count(), 1);
}

/// Rule Logout, contract: "After logout the client stays listed with `logged_in: false`"
/// (the username is kept, the token dropped).
#[test]
fn logout_keeps_the_client_listed_with_its_username() {
    let mut state = alice_logged_in();
    assert_eq!(state.apply(&logout("c1", "t1")).outcome, Outcome::LoggedOut);
    assert!(!state.session_valid("c1", "t1"));
    assert_eq!(
        state.clients(),
        vec![ClientSummary {
            client_id: "c1".to_string(),
            address: ADDR.to_string(),
            username: Some("alice".to_string()),
            logged_in: false,
        }]
    );
}

/// Rule Logout: unknown client → NotFound; wrong token or not logged in → Unauthorized;
/// the state is unchanged after each.
#[test]
fn logout_refuses_unknown_client_wrong_token_and_logged_out_client() {
    let mut state = alice_logged_in();
    let rejection = assert_rejected(&mut state, logout("nobody", "t1"));
    assert!(matches!(rejection, Rejection::NotFound(_)));
    let rejection = assert_rejected(&mut state, logout("c1", "wrong"));
    assert!(matches!(rejection, Rejection::Unauthorized(_)));
    assert!(state.session_valid("c1", "t1"));

    state.apply(&logout("c1", "t1"));
    let rejection = assert_rejected(&mut state, logout("c1", "t1"));
    assert!(matches!(rejection, Rejection::Unauthorized(_)));
}

/// Rule Message: a new message is stored with the session's username and its index is
/// reported in `posted` so the server can print it.
#[test]
fn message_is_stored_with_the_sessions_username() {
    let mut state = alice_logged_in();
    let applied = state.apply(&message("c1", "t1", 1, "hello"));
    let expected = Posted {
        index: 1,
        client_id: "c1".to_string(),
        username: "alice".to_string(),
        seq: 1,
        text: "hello".to_string(),
    };
    assert_eq!(applied.outcome, Outcome::Posted { index: 1 });
    assert_eq!(applied.posted, Some(1));
    assert_eq!(state.messages(1, 100), vec![expected]);
}

/// Rule Message: unknown client → NotFound; not logged in or wrong token →
/// Unauthorized; the state is unchanged after each.
#[test]
fn message_refuses_unknown_client_and_bad_sessions() {
    let mut state = alice_logged_in();
    let rejection = assert_rejected(&mut state, message("nobody", "t1", 1, "hi"));
    assert!(matches!(rejection, Rejection::NotFound(_)));
    let rejection = assert_rejected(&mut state, message("c1", "wrong", 1, "hi"));
    assert!(matches!(rejection, Rejection::Unauthorized(_)));

    state.apply(&init("c2", "10.0.0.2:9000"));
    let rejection = assert_rejected(&mut state, message("c2", "t1", 1, "hi"));
    assert!(matches!(rejection, Rejection::Unauthorized(_)));

    state.apply(&logout("c1", "t1"));
    let rejection = assert_rejected(&mut state, message("c1", "t1", 1, "hi"));
    assert!(matches!(rejection, Rejection::Unauthorized(_)));
    assert_eq!(state.message_count(), 0);
}

/// Contract: "A retry of the client's last (client_id, seq) returns the same index and
/// never stores the message twice."
#[test]
fn retry_of_the_last_seq_returns_the_same_index_and_stores_nothing() {
    let mut state = alice_logged_in();
    let first = state.apply(&message("c1", "t1", 1, "hello"));
    let before = state.clone();
    let retry = state.apply(&message("c1", "t1", 1, "hello"));
    assert_eq!(posted_index(&retry), posted_index(&first));
    assert_eq!(retry.posted, None);
    assert_eq!(state, before, "a retry changed the state");
    assert_eq!(state.message_count(), 1);
}

/// Contract: "A seq below the last, or the last seq with a different text, gets 409
/// conflict"; the state is unchanged.
#[test]
fn reused_or_backward_seq_is_a_conflict() {
    let mut state = alice_logged_in();
    state.apply(&message("c1", "t1", 1, "one"));
    state.apply(&message("c1", "t1", 2, "two"));
    let rejection = assert_rejected(&mut state, message("c1", "t1", 2, "other"));
    assert!(matches!(rejection, Rejection::Conflict(_)));
    let rejection = assert_rejected(&mut state, message("c1", "t1", 1, "one"));
    assert!(matches!(rejection, Rejection::Conflict(_)));
    assert_eq!(state.message_count(), 2);
}

/// Contract: "index is the message's number on the message board: 1, 2, 3, ... with no
/// gaps, in commit order", also across clients and with rejections and retries between.
#[test]
fn indexes_are_gapless_across_clients_rejections_and_retries() {
    let mut state = alice_logged_in();
    state.apply(&init("c2", "10.0.0.2:9000"));
    state.apply(&register("bob"));
    state.apply(&login("c2", "bob", "t2"));

    let mut indexes = Vec::new();
    indexes.push(posted_index(&state.apply(&message("c1", "t1", 1, "a1"))));
    indexes.push(posted_index(&state.apply(&message("c2", "t2", 1, "b1"))));
    state.apply(&message("c1", "t1", 1, "a1")); // retry
    state.apply(&message("c2", "t2", 1, "clash")); // conflict
    state.apply(&message("c2", "wrong", 2, "b2")); // unauthorized
    indexes.push(posted_index(&state.apply(&message("c2", "t2", 2, "b2"))));
    indexes.push(posted_index(&state.apply(&message("c1", "t1", 5, "a5"))));

    assert_eq!(indexes, vec![1, 2, 3, 4]);
    let board: Vec<u64> = state.messages(1, 100).iter().map(|m| m.index).collect();
    assert_eq!(board, vec![1, 2, 3, 4]);
    assert_eq!(state.message_count(), 4);
}

/// Rule Message: the at-most-once record belongs to the client_id and survives logout
/// and a later login (contract: a retry after a failover returns the same index).
#[test]
fn at_most_once_survives_logout_and_login() {
    let mut state = alice_logged_in();
    state.apply(&message("c1", "t1", 7, "hello"));
    state.apply(&logout("c1", "t1"));
    state.apply(&login("c1", "alice", "t9"));

    let retry = state.apply(&message("c1", "t9", 7, "hello"));
    assert_eq!(posted_index(&retry), 1);
    assert_eq!(retry.posted, None);
    let rejection = assert_rejected(&mut state, message("c1", "t9", 6, "older"));
    assert!(matches!(rejection, Rejection::Conflict(_)));
    assert_eq!(
        posted_index(&state.apply(&message("c1", "t9", 8, "next"))),
        2
    );
}

/// `check_message` gives the same verdict as `apply` would: retry, new, or refusal.
#[test]
fn check_message_agrees_with_apply() {
    let mut state = alice_logged_in();
    assert_eq!(state.check_message("c1", "t1", 1, "hello"), Ok(None));
    state.apply(&message("c1", "t1", 1, "hello"));
    assert_eq!(state.check_message("c1", "t1", 1, "hello"), Ok(Some(1)));
    assert_eq!(state.check_message("c1", "t1", 2, "next"), Ok(None));
    assert!(matches!(
        state.check_message("c1", "t1", 1, "other"),
        Err(Rejection::Conflict(_))
    ));
    assert!(matches!(
        state.check_message("c1", "t1", 0, "older"),
        Err(Rejection::Conflict(_))
    ));
    assert!(matches!(
        state.check_message("c1", "bad", 2, "x"),
        Err(Rejection::Unauthorized(_))
    ));
    assert!(matches!(
        state.check_message("nobody", "t1", 2, "x"),
        Err(Rejection::NotFound(_))
    ));

    for (seq, text) in [(1, "hello"), (2, "next"), (1, "other"), (0, "older")] {
        let verdict = state.check_message("c1", "t1", seq, text);
        let applied = state.clone().apply(&message("c1", "t1", seq, text));
        let expected = match verdict {
            Ok(Some(index)) => Outcome::Posted { index },
            Ok(None) => Outcome::Posted {
                index: state.message_count() + 1,
            },
            Err(rejection) => Outcome::Rejected(rejection),
        };
        assert_eq!(applied.outcome, expected, "seq {seq} text {text}");
    }
}

/// Determinism: two states applying the same requests end equal, with equal outcomes
/// (every server reaches the same state from the same log).
#[test]
fn same_requests_give_equal_states_and_outcomes() {
    let log = vec![
        init("c2", "10.0.0.2:9000"),
        init("c1", "10.0.0.1:9000"),
        register("bob"),
        register("alice"),
        register("alice"),
        login("c2", "bob", "tb"),
        login("c1", "alice", "ta"),
        message("c1", "ta", 1, "hi"),
        message("c2", "tb", 1, "yo"),
        message("c1", "ta", 1, "hi"),
        logout("c2", "tb"),
        message("c2", "tb", 2, "late"),
    ];
    let (mut a, mut b) = (State::new(), State::new());
    let outcomes_a: Vec<Applied> = log.iter().map(|r| a.apply(r)).collect();
    let outcomes_b: Vec<Applied> = log.iter().map(|r| b.apply(r)).collect();
    assert_eq!(outcomes_a, outcomes_b);
    assert_eq!(a, b);
    // Listing order is by client_id, whatever the order of arrival.
    let ids: Vec<String> = a.clients().into_iter().map(|c| c.client_id).collect();
    assert_eq!(ids, vec!["c1".to_string(), "c2".to_string()]);
    assert_eq!(
        a.client_addresses(),
        vec!["10.0.0.1:9000".to_string(), "10.0.0.2:9000".to_string()]
    );
}

/// Contract, GET /messages: "the messages with index >= N in index order, at most M".
#[test]
fn messages_pages_by_from_and_limit() {
    let mut state = alice_logged_in();
    for seq in 1..=5 {
        state.apply(&message("c1", "t1", seq, &format!("m{seq}")));
    }
    let page = |from, limit| -> Vec<u64> {
        state
            .messages(from, limit)
            .iter()
            .map(|m| m.index)
            .collect()
    };
    assert_eq!(page(1, 100), vec![1, 2, 3, 4, 5]);
    assert_eq!(page(0, 2), vec![1, 2]);
    assert_eq!(page(2, 2), vec![2, 3]);
    assert_eq!(page(4, 10), vec![4, 5]);
    assert_eq!(page(6, 10), Vec::<u64>::new());
    assert_eq!(page(u64::MAX, u64::MAX), Vec::<u64>::new());
    assert_eq!(page(1, 0), Vec::<u64>::new());
    assert_eq!(state.messages(3, 1)[0].text, "m3");
}

/// Contract, GET /status: `clients`, `logged_in` and `messages` counts.
#[test]
fn counts_follow_clients_sessions_and_messages() {
    let mut state = State::new();
    assert_eq!(
        (
            state.client_count(),
            state.logged_in_count(),
            state.message_count()
        ),
        (0, 0, 0)
    );
    state.apply(&init("c1", ADDR));
    state.apply(&init("c2", "10.0.0.2:9000"));
    state.apply(&register("alice"));
    state.apply(&login("c1", "alice", "t1"));
    state.apply(&login("c2", "alice", "t2"));
    state.apply(&message("c1", "t1", 1, "hi"));
    assert_eq!(
        (
            state.client_count(),
            state.logged_in_count(),
            state.message_count()
        ),
        (2, 2, 1)
    );
    state.apply(&logout("c2", "t2"));
    assert_eq!(
        (
            state.client_count(),
            state.logged_in_count(),
            state.message_count()
        ),
        (2, 1, 1)
    );
}

fn expire(client_id: &str) -> Request {
    req(Command::ExpireClient {
        client_id: client_id.to_string(),
    })
}

/// Rule ExpireClient: a client that never logged in is forgotten and no longer counted.
#[test]
fn expire_client_forgets_a_client_that_never_logged_in() {
    let mut state = State::new();
    state.apply(&init("c1", "10.0.0.1:9000"));
    state.apply(&init("c2", "10.0.0.2:9000"));
    let applied = state.apply(&expire("c1"));
    assert_eq!(
        applied.outcome,
        Outcome::ClientExpired {
            client_id: "c1".to_string()
        }
    );
    assert!(!state.client_exists("c1"));
    assert!(state.client_exists("c2"));
    assert_eq!(state.client_count(), 1);
    assert_eq!(state.client_addresses(), vec!["10.0.0.2:9000".to_string()]);
}

/// Rule ExpireClient: a client that logged in is kept, even after it logged out, and so is
/// the state; an unknown client is NotFound.
#[test]
fn expire_client_keeps_a_client_that_logged_in() {
    let mut state = State::new();
    state.apply(&init("c1", ADDR));
    state.apply(&register("alice"));
    state.apply(&login("c1", "alice", "t1"));
    let before = state.clone();
    assert!(matches!(
        state.apply(&expire("c1")).outcome,
        Outcome::Rejected(Rejection::Conflict(_))
    ));
    assert_eq!(state, before);
    state.apply(&logout("c1", "t1"));
    assert!(matches!(
        state.apply(&expire("c1")).outcome,
        Outcome::Rejected(Rejection::Conflict(_))
    ));
    assert!(state.client_exists("c1"));
    assert!(matches!(
        state.apply(&expire("nobody")).outcome,
        Outcome::Rejected(Rejection::NotFound(_))
    ));
}

/// A committed entry is applied from a view that borrows its strings from the entry's bytes.
/// The view must read every command as the owned request does, and applying either must
/// leave the same tables and give the same answer.
#[test]
fn applying_a_view_of_the_entry_is_applying_the_request() {
    let history = [
        init("c1", ADDR),
        register("alice"),
        login("c1", "alice", "t1"),
        message("c1", "t1", 1, "hello, wörld"),
        message("c1", "t1", 1, "hello, wörld"),
        message("c1", "t1", 1, "other text"),
        logout("c1", "t1"),
        init("c2", "10.0.0.2:9000"),
        expire("c2"),
    ];
    let mut owned = State::new();
    let mut viewed = State::new();
    for request in &history {
        let bytes = request.encode();
        let view = Request::view(&bytes).expect("a view of what was just encoded");
        assert_eq!(view.origin, request.origin);
        assert_eq!(
            postcard::to_stdvec(&view).unwrap(),
            bytes,
            "the view is the same request"
        );
        let from_view = apply(&mut viewed.0, &view).expect("memory never fails");
        assert_eq!(from_view, owned.apply(request));
        assert_eq!(viewed, owned);
    }
    assert_eq!(owned.message_count(), 1);
}
