//! Fuzz targets for every decoder of untrusted bytes, as property tests on the stable
//! toolchain (proptest): peer stream frames, log records, state-transfer chunks, the JSON
//! bodies of every endpoint, and HTTP request heads (hyper's parser, httparse, and our own
//! header parsers).
//!
//! Each target gets raw random bytes and mutations (a few bytes replaced) of valid inputs,
//! and checks that the decoder does not panic, that no single allocation it makes is out of
//! proportion to its input (a length field must never size a buffer by itself), and, where
//! the format carries a checksum, that a mutated record or chunk is never accepted.
//!
//! `cargo test` runs a short pass (a few hundred cases a target). The long pass runs each
//! target for a while and counts executions:
//!
//! ```text
//! UNDERSTUDY_FUZZ_SECONDS=600 cargo test --release --lib fuzz::long -- --ignored --nocapture
//! UNDERSTUDY_FUZZ_TARGETS=log_records,state_chunks ...   # some targets only
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Seek, SeekFrom, Write as _};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use tokio_util::codec::Decoder;

use crate::api;
use crate::replication::{Entry, Envelope, HardState, Message, Payload, Write};
use crate::server::client_api::bearer_token;
use crate::server::peer_stream::{Frame, MAX_FRAME_BYTES, codec, handshake_codec};
use crate::server::response::parse_json_object;
use crate::storage::record::{Known, encode_payload, encode_record, file_header, replay};
use crate::storage::transfer::{ChunkData, Record, decode_records};

// ---- the largest single allocation, per thread, while a target runs ----

/// The system allocator, noting the largest allocation made on a thread that is tracking.
struct Tracking;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: during thread teardown the slots may be gone; nothing to note then.
    if TRACKING.try_with(Cell::get).unwrap_or(false) {
        let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
    }
}

// SAFETY: every call is passed to `System` unchanged; the thread-locals are const-initialized
// `Cell`s of `Copy` types, so noting a size never allocates or recurses.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f`, and fails if it made an allocation larger than `bound` bytes.
fn within_allocation_bound<T>(bound: usize, f: impl FnOnce() -> T) -> Result<T, String> {
    LARGEST.with(|largest| largest.set(0));
    TRACKING.with(|tracking| tracking.set(true));
    let value = f();
    TRACKING.with(|tracking| tracking.set(false));
    let largest = LARGEST.with(Cell::get);
    if largest > bound {
        return Err(format!("an allocation of {largest} bytes (bound {bound})"));
    }
    Ok(value)
}

/// What a decoder may allocate at once for an input of `len` bytes: a fixed amount plus a
/// multiple of the input (decoded values are larger than their encoding). The fixed amount
/// is serde's: a sequence's announced length reserves capacity for at most 1 MiB of
/// elements before they arrive, whatever the length says.
fn bound_for(len: usize) -> usize {
    (1 << 20) + 64 * len
}

// ---- inputs ----

/// Replaces bytes of `seed` at the given (position, byte) pairs (positions wrap).
fn mutate(mut seed: Vec<u8>, edits: &[(usize, u8)]) -> Vec<u8> {
    if seed.is_empty() {
        return seed;
    }
    for &(at, byte) in edits {
        let len = seed.len();
        seed[at % len] = byte;
    }
    seed
}

/// Random bytes, or a valid seed with a few bytes replaced.
fn bytes_or_mutations(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let count = seeds.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        (
            0..count,
            proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)
        )
            .prop_map(move |(i, edits)| mutate(seeds[i].clone(), &edits)),
    ]
    .boxed()
}

fn entry(index: u64, command: &[u8]) -> Entry {
    Entry {
        term: 1,
        index,
        payload: Payload::Command(command.to_vec()),
    }
}

// ---- peer stream frames ----

fn frame_seeds() -> Vec<Vec<u8>> {
    let envelope = |message| Envelope {
        from: "127.0.0.1:7001".to_string(),
        to: "127.0.0.1:7002".to_string(),
        term: 3,
        message,
    };
    let frames = [
        Frame::Challenge { nonce: [7; 32] },
        Frame::Hello {
            id: "127.0.0.1:7001".to_string(),
            nonce: [9; 32],
            mac: vec![1; 32],
        },
        Frame::Welcome { mac: vec![2; 32] },
        Frame::Messages(vec![
            envelope(Message::Append {
                prev_index: 4,
                prev_term: 2,
                entries: vec![entry(5, b"hello"), entry(6, b"board")],
                commit: 4,
                round: 11,
            }),
            envelope(Message::AppendAccepted {
                match_index: 6,
                round: 11,
            }),
            envelope(Message::Vote {
                last_index: 6,
                last_term: 3,
                pre: true,
                transfer: false,
            }),
        ]),
        Frame::Removed("removed".to_string()),
    ];
    frames
        .iter()
        .filter_map(|frame| frame.encode().ok())
        .map(|payload| {
            // As on the wire: a 4-byte big-endian length, then the frame.
            let mut wire = (payload.len() as u32).to_be_bytes().to_vec();
            wire.extend_from_slice(&payload);
            wire
        })
        .collect()
}

/// Splits `input` into frames with `codec` and decodes each.
fn decode_frames(mut codec: impl Decoder<Item = BytesMut>, input: &[u8]) {
    let mut buffer = BytesMut::from(input);
    // A frame announced longer than the maximum is an error, never an allocation.
    while let Ok(Some(frame)) = codec.decode(&mut buffer) {
        let _ = Frame::decode(&frame);
    }
    let _ = Frame::decode(input);
}

/// The stream's framing and each frame's decoding, on bytes as a peer could send them:
/// before the handshake nothing may allocate out of proportion to the input; after it, a
/// peer that proved the secret may announce a frame up to the maximum, and no more.
fn check_peer_frames(input: &[u8]) -> Result<(), String> {
    within_allocation_bound(bound_for(input.len()), || {
        decode_frames(handshake_codec(), input)
    })?;
    within_allocation_bound(MAX_FRAME_BYTES + bound_for(input.len()), || {
        decode_frames(codec(), input)
    })
}

// ---- log records ----

/// A valid log: a hard state, then one `Entries` record per command.
fn log_writes(commands: &[Vec<u8>]) -> Vec<Write> {
    let mut writes = vec![Write::HardState(HardState {
        term: 1,
        vote: Some("127.0.0.1:7001".to_string()),
    })];
    for (i, command) in commands.iter().enumerate() {
        writes.push(Write::Entries(vec![entry(i as u64 + 1, command)]));
    }
    writes
}

/// A log file's bytes and where each record starts.
fn log_file(writes: &[Write]) -> (Vec<u8>, Vec<usize>) {
    let mut file = file_header().to_vec();
    let mut starts = Vec::new();
    for write in writes {
        starts.push(file.len());
        let payload = encode_payload(write).unwrap_or_default();
        file.extend_from_slice(&encode_record(&payload));
    }
    (file, starts)
}

/// A log with one byte changed, and which byte.
#[derive(Debug, Clone)]
struct MutatedLog {
    commands: Vec<Vec<u8>>,
    at: usize,
    byte: u8,
}

fn mutated_log() -> impl Strategy<Value = MutatedLog> {
    (
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..48), 1..6),
        any::<usize>(),
        any::<u8>(),
    )
        .prop_map(|(commands, at, byte)| MutatedLog { commands, at, byte })
}

/// Replays `bytes` as a log file.
fn replay_bytes(
    file: &mut std::fs::File,
    bytes: &[u8],
) -> crate::Result<crate::storage::record::Replayed> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(bytes)?;
    replay(std::path::Path::new("fuzzed log"), file, Known::default())
}

/// Rule: replay never accepts a record with a changed byte. It either reports damage, or
/// ends before that record (as at a torn write), with exactly the state of the records
/// before it.
fn check_log_records(case: &MutatedLog, file: &mut std::fs::File) -> Result<(), String> {
    let writes = log_writes(&case.commands);
    let (original, starts) = log_file(&writes);
    // Only the records' bytes: the file header has its own checks.
    let header = file_header().len();
    let at = header + case.at % (original.len() - header);
    if original[at] == case.byte {
        return Ok(());
    }
    let mut mutated = original.clone();
    mutated[at] = case.byte;
    let hit = starts.iter().rposition(|&start| start <= at).unwrap_or(0);

    let result =
        within_allocation_bound(bound_for(mutated.len()), || replay_bytes(file, &mutated))?;
    let Ok(replayed) = result else {
        return Ok(()); // reported as damage
    };
    if replayed.valid_len > starts[hit] as u64 {
        return Err(format!(
            "a record with byte {at} changed was accepted (valid up to {}, the record starts at {})",
            replayed.valid_len, starts[hit]
        ));
    }
    let (prefix, _) = log_file(&writes[..hit]);
    let expected = replay_bytes(file, &prefix).map_err(|err| err.to_string())?;
    if replayed.state != expected.state {
        return Err("replay ended with a state other than the records before the change".into());
    }
    Ok(())
}

/// Any bytes after a valid file header: replay reports damage or stops, and never panics.
fn check_log_bytes(input: &[u8], file: &mut std::fs::File) -> Result<(), String> {
    let mut bytes = file_header().to_vec();
    bytes.extend_from_slice(input);
    within_allocation_bound(bound_for(bytes.len()), || {
        let _ = replay_bytes(file, &bytes);
    })
}

// ---- state-transfer chunks ----

fn chunk_of(records: &[Record], seq: u64) -> ChunkData {
    let encoded = postcard::to_stdvec(records).unwrap_or_default();
    ChunkData {
        seq,
        last: false,
        crc: crc32fast::hash(&encoded),
        records: encoded,
    }
}

fn chunk_seeds() -> Vec<Vec<u8>> {
    let records = vec![
        Record::User("alice".to_string(), "$argon2id$v=19$...".to_string()),
        Record::Message(
            1,
            crate::app::MessageRecord {
                client_id: "c1".to_string(),
                username: "alice".to_string(),
                seq: 1,
                text: "hello".to_string(),
            },
        ),
    ];
    let chunk = chunk_of(&records, 3);
    let state_chunk = crate::server::state_transfer::StateChunk {
        from: "127.0.0.1:7001".to_string(),
        term: 2,
        transfer: 99,
        data: chunk,
    };
    vec![postcard::to_stdvec(&state_chunk).unwrap_or_default()]
}

/// A chunk's wire decoding, then its records' (checksum, then postcard).
fn check_chunk_bytes(input: &[u8]) -> Result<(), String> {
    within_allocation_bound(bound_for(input.len()), || {
        if let Ok(chunk) = postcard::from_bytes::<crate::server::state_transfer::StateChunk>(input)
        {
            let _ = decode_records(&chunk.data);
        }
    })
}

/// Rule: a chunk whose records or checksum changed is refused.
fn check_mutated_chunk(usernames: &[String], at: usize, byte: u8) -> Result<(), String> {
    let records: Vec<Record> = usernames
        .iter()
        .map(|name| Record::User(name.clone(), format!("hash of {name}")))
        .collect();
    let chunk = chunk_of(&records, 0);
    if decode_records(&chunk).as_ref().ok() != Some(&records) {
        return Err("a valid chunk was refused".into());
    }
    // Change one byte of the records, or of the checksum.
    let mut mutated = chunk.clone();
    let crc_bytes = 4;
    let place = at % (mutated.records.len() + crc_bytes);
    if place < mutated.records.len() {
        if mutated.records[place] == byte {
            return Ok(());
        }
        mutated.records[place] = byte;
    } else {
        let mut crc = mutated.crc.to_le_bytes();
        let i = place - mutated.records.len();
        if crc[i] == byte {
            return Ok(());
        }
        crc[i] = byte;
        mutated.crc = u32::from_le_bytes(crc);
    }
    match decode_records(&mutated) {
        Err(_) => Ok(()),
        Ok(_) => Err(format!("a chunk with byte {place} changed was accepted")),
    }
}

// ---- JSON bodies ----

fn json_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"port": 7000}"#,
        r#"{"username": "alice", "password": "correct horse"}"#,
        r#"{"client_id": "0123456789abcdef", "seq": 1, "message": "hello"}"#,
        r#"{"client_id": "0123456789abcdef"}"#,
        r#"{"id": "127.0.0.1:7003"}"#,
        r#"{"primary": "127.0.0.1:7001", "term": 2, "backups": ["127.0.0.1:7002"]}"#,
        r#"{"to": "127.0.0.1:7002"}"#,
        r#"{"primary": "127.0.0.1:7002", "term": 3}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// Decodes `input` as `T` the way the server does; what is accepted must be an object and
/// must survive a round trip through its own encoding.
fn json_as<T>(input: &[u8]) -> Result<(), String>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    if let Ok(value) = parse_json_object::<T>(input) {
        if input.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err("a body that is not an object was accepted".into());
        }
        let encoded = serde_json::to_vec(&value).map_err(|err| err.to_string())?;
        let again = parse_json_object::<T>(&encoded).map_err(|err| err.to_string())?;
        if serde_json::to_vec(&again).ok() != Some(encoded) {
            return Err("an accepted body does not survive a round trip".into());
        }
    }
    Ok(())
}

/// Every endpoint's body type.
fn check_json_bodies(input: &[u8]) -> Result<(), String> {
    within_allocation_bound(bound_for(input.len()), || -> Result<(), String> {
        json_as::<api::InitRequest>(input)?;
        json_as::<api::RegisterRequest>(input)?;
        json_as::<api::AuthRequest>(input)?;
        json_as::<api::DemoMessageRequest>(input)?;
        json_as::<api::LogoutRequest>(input)?;
        json_as::<api::InitBackupRequest>(input)?;
        json_as::<api::SetBackupsRequest>(input)?;
        json_as::<api::HandOverRequest>(input)?;
        json_as::<api::RemoveServerRequest>(input)?;
        json_as::<api::NewPrimary>(input)?;
        Ok(())
    })?
}

// ---- HTTP request heads ----

fn http_seeds() -> Vec<Vec<u8>> {
    [
        "POST /client/demo-message HTTP/1.1\r\nhost: 127.0.0.1:7001\r\nauthorization: Bearer 0123456789abcdef0123456789abcdef\r\ncontent-type: application/json\r\ncontent-length: 61\r\n\r\n",
        "POST /replication/set-backups HTTP/1.1\r\nhost: 127.0.0.1:7001\r\nx-understudy-auth: t=1764600000,n=00112233445566778899aabbccddeeff,sig=00ff00ff\r\ncontent-length: 2\r\n\r\n{}",
        "GET /messages?from=1&limit=100 HTTP/1.1\r\nhost: x\r\n\r\n",
        "GET /replication/stream HTTP/1.1\r\nconnection: upgrade\r\nupgrade: understudy-peer/1\r\n\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// hyper's request-head parser (httparse), then our parsers of the headers we read.
fn check_http_head(input: &[u8]) -> Result<(), String> {
    within_allocation_bound(bound_for(input.len()), || {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        if request.parse(input).is_ok() {
            for header in request.headers.iter() {
                if header.name.eq_ignore_ascii_case("authorization") {
                    let _ = bearer_token(Some(header.value));
                }
                if let Ok(value) = std::str::from_utf8(header.value) {
                    let _ = crate::server::auth::parse_header(value);
                }
                let _ = axum::http::HeaderValue::from_bytes(header.value);
                let _ = axum::http::HeaderName::from_bytes(header.name.as_bytes());
            }
            if let Some(path) = request.path {
                let _ = path.parse::<axum::http::Uri>();
            }
        }
        // The header values on their own, as if a proxy had passed them through.
        let _ = bearer_token(Some(input));
        if let Ok(text) = std::str::from_utf8(input) {
            let _ = crate::server::auth::parse_header(text);
        }
    })
}

// ---- the short pass, in `cargo test` ----

proptest! {
    #![proptest_config(Config { cases: 256, failure_persistence: None, ..Config::default() })]

    /// Fuzz (peer frames): framing and frame decoding never panic or over-allocate.
    #[test]
    fn peer_frames(input in bytes_or_mutations(frame_seeds())) {
        check_peer_frames(&input).map_err(TestCaseError::fail)?;
    }

    /// Fuzz (log records): a changed byte is never accepted as a valid record.
    #[test]
    fn log_records(case in mutated_log()) {
        let mut file = tempfile::tempfile().map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_log_records(&case, &mut file).map_err(TestCaseError::fail)?;
    }

    /// Fuzz (log records): any bytes after a file header are replayed without a panic.
    #[test]
    fn log_bytes(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut file = tempfile::tempfile().map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_log_bytes(&input, &mut file).map_err(TestCaseError::fail)?;
    }

    /// Fuzz (state chunks): decoding never panics or over-allocates.
    #[test]
    fn state_chunk_bytes(input in bytes_or_mutations(chunk_seeds())) {
        check_chunk_bytes(&input).map_err(TestCaseError::fail)?;
    }

    /// Fuzz (state chunks): a changed byte in the records or checksum is refused.
    #[test]
    fn state_chunks_mutated(
        names in proptest::collection::vec("[a-z]{1,12}", 1..20),
        at in any::<usize>(),
        byte in any::<u8>(),
    ) {
        check_mutated_chunk(&names, at, byte).map_err(TestCaseError::fail)?;
    }

    /// Fuzz (JSON bodies): every endpoint's body decoder.
    #[test]
    fn json_bodies(input in bytes_or_mutations(json_seeds())) {
        check_json_bodies(&input).map_err(TestCaseError::fail)?;
    }

    /// Fuzz (HTTP heads): the request-head parser and our header parsers.
    #[test]
    fn http_heads(input in bytes_or_mutations(http_seeds())) {
        check_http_head(&input).map_err(TestCaseError::fail)?;
    }
}

/// A planted over-allocation is caught: the bound is real.
#[test]
fn the_allocation_bound_catches_a_buffer_sized_by_its_input() {
    let input = 16_000_000u32.to_le_bytes();
    let sized_by_input = within_allocation_bound(bound_for(input.len()), || {
        let len = u32::from_le_bytes(input) as usize;
        std::hint::black_box(Vec::<u8>::with_capacity(len));
    });
    assert!(sized_by_input.is_err());
}

// ---- the long pass, on demand ----

/// Runs `check` on values of `strategy` until `until`; returns how many ran.
fn drive<S: Strategy>(
    strategy: S,
    until: Instant,
    mut check: impl FnMut(&S::Value) -> Result<(), String>,
) -> u64
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let mut executions = 0u64;
    while Instant::now() < until {
        let Ok(tree) = strategy.new_tree(&mut runner) else {
            continue;
        };
        let value = tree.current();
        if let Err(why) = check(&value) {
            panic!("fuzz failure after {executions} executions: {why}\ninput: {value:?}");
        }
        executions += 1;
    }
    executions
}

/// Every target for `UNDERSTUDY_FUZZ_SECONDS` (default 600) each, or the ones named in
/// `UNDERSTUDY_FUZZ_TARGETS`; prints the executions per target.
#[test]
#[ignore = "long: run on demand (see the module's documentation)"]
fn long() {
    let seconds = std::env::var("UNDERSTUDY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let only = std::env::var("UNDERSTUDY_FUZZ_TARGETS").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|n| n.trim() == name);
    let per_target = Duration::from_secs(seconds);
    let report = |name: &str, executions: u64| {
        println!(
            "fuzz {name}: {executions} executions in {seconds} s, 0 failures ({:.0}/s)",
            executions as f64 / seconds as f64
        );
    };
    let mut file = tempfile::tempfile().expect("a temporary file");
    if wanted("peer_frames") {
        let n = drive(
            bytes_or_mutations(frame_seeds()),
            Instant::now() + per_target,
            |i| check_peer_frames(i),
        );
        report("peer_frames", n);
    }
    if wanted("log_records") {
        let until = Instant::now() + per_target;
        // Half the time on mutated valid logs, half on arbitrary bytes.
        let half = until - per_target / 2;
        let n = drive(mutated_log(), half, |case| {
            check_log_records(case, &mut file)
        }) + drive(
            proptest::collection::vec(any::<u8>(), 0..2048),
            until,
            |input| check_log_bytes(input, &mut file),
        );
        report("log_records", n);
    }
    if wanted("state_chunks") {
        let until = Instant::now() + per_target;
        let half = until - per_target / 2;
        let n = drive(bytes_or_mutations(chunk_seeds()), half, |i| {
            check_chunk_bytes(i)
        }) + drive(
            (
                proptest::collection::vec("[a-z]{1,12}", 1..20),
                any::<usize>(),
                any::<u8>(),
            ),
            until,
            |(names, at, byte)| check_mutated_chunk(names, *at, *byte),
        );
        report("state_chunks", n);
    }
    if wanted("json_bodies") {
        let n = drive(
            bytes_or_mutations(json_seeds()),
            Instant::now() + per_target,
            |i| check_json_bodies(i),
        );
        report("json_bodies", n);
    }
    if wanted("http_heads") {
        let n = drive(
            bytes_or_mutations(http_seeds()),
            Instant::now() + per_target,
            |i| check_http_head(i),
        );
        report("http_heads", n);
    }
}
