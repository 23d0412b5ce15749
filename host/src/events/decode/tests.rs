use rmpv::Value;

use super::*;

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).unwrap();
    out
}

fn s(text: &str) -> Value {
    Value::from(text)
}

fn ints(values: &[i64]) -> Value {
    Value::Array(values.iter().map(|&v| Value::from(v)).collect())
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (s(k), v)).collect())
}

fn stored(hashes: Vec<u64>, parent: Option<u64>) -> Stored {
    Stored {
        hashes,
        parent,
        token_ids: vec![1, 2, 3, 4],
        block_size: 4,
        medium: Medium::Gpu,
        lora_seed: 0,
        prefix_cache: true,
    }
}

#[test]
fn sglangs_arrays_with_and_without_the_dp_rank() {
    let events = Value::Array(vec![
        Value::Array(vec![
            s("BlockStored"),
            ints(&[-5]),
            Value::Nil,
            ints(&[1, 2, 3, 4]),
            Value::from(4),
            Value::Nil,
            s("GPU"),
        ]),
        Value::Array(vec![s("BlockRemoved"), ints(&[-5]), s("CPU")]),
        Value::Array(vec![s("AllBlocksCleared")]),
    ]);
    let batch = decode(&encode(&Value::Array(vec![
        Value::from(1.5),
        events.clone(),
        Value::from(3),
    ])))
    .unwrap();
    assert_eq!(batch.ts, 1.5);
    assert_eq!(batch.dp_rank, Some(3));
    assert_eq!(
        batch.events,
        [
            Event::Stored(stored(vec![(-5i64) as u64], None)),
            Event::Removed {
                hashes: vec![(-5i64) as u64],
                medium: Medium::Cpu
            },
            Event::Cleared,
        ]
    );
    // The older two-element batch, and a BlockStored without its medium.
    let short = Value::Array(vec![
        s("BlockStored"),
        ints(&[9]),
        Value::from(8),
        ints(&[1, 2, 3, 4]),
        Value::from(4),
        Value::Nil,
    ]);
    let batch = decode(&encode(&Value::Array(vec![
        Value::from(2.0),
        Value::Array(vec![short]),
    ])))
    .unwrap();
    assert_eq!(batch.dp_rank, None);
    assert_eq!(batch.events, [Event::Stored(stored(vec![9], Some(8)))]);
}

#[test]
fn vllms_maps_with_bytes_hashes_adapters_and_attention_groups() {
    let full = map(vec![
        ("type", s("BlockStored")),
        (
            "block_hashes",
            Value::Array(vec![Value::Binary(vec![0xab; 32])]),
        ),
        ("parent_block_hash", Value::from(u64::MAX)),
        ("token_ids", ints(&[1, 2, 3, 4])),
        ("block_size", Value::from(4)),
        ("lora_name", s("sql-adapter")),
        ("medium", s("cpu")),
        ("kv_cache_spec_kind", s("full_attention")),
        ("a_field_from_the_future", Value::from(true)),
    ]);
    let sliding = map(vec![
        ("type", s("BlockStored")),
        ("block_hashes", ints(&[1])),
        ("token_ids", ints(&[1, 2, 3, 4])),
        ("block_size", Value::from(4)),
        ("kv_cache_spec_kind", s("sliding_window")),
        ("kv_cache_spec_sliding_window", Value::from(128)),
    ]);
    let future = map(vec![("type", s("BlockPromoted"))]);
    let batch = decode(&encode(&map(vec![
        ("ts", Value::from(3.25)),
        ("events", Value::Array(vec![full, sliding, future])),
        ("data_parallel_rank", Value::from(1)),
    ])))
    .unwrap();
    assert_eq!((batch.ts, batch.dp_rank, batch.skipped), (3.25, Some(1), 1));
    let Event::Stored(first) = &batch.events[0] else {
        panic!("{:?}", batch.events)
    };
    assert_eq!(first.hashes, [xxh3_64(&[0xab; 32])]);
    assert_eq!(first.parent, Some(u64::MAX));
    assert_eq!(first.medium, Medium::Cpu);
    assert_eq!(first.lora_seed, xxh3_64(b"sql-adapter"));
    assert!(first.prefix_cache);
    let Event::Stored(second) = &batch.events[1] else {
        panic!("{:?}", batch.events)
    };
    assert!(
        !second.prefix_cache,
        "sliding-window pages are not prefix cache"
    );
    assert_eq!(second.lora_seed, 0);
}

#[test]
fn malformed_payloads_are_errors_that_say_what_is_wrong() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "not msgpack"),
        (vec![0x92, 0xcb], "not msgpack"),
        (encode(&Value::from(1)), "not a KV event batch"),
        (
            [
                encode(&Value::Array(vec![Value::from(1.0), Value::Array(vec![])])),
                vec![0],
            ]
            .concat(),
            "1 bytes after",
        ),
        (
            encode(&Value::Array(vec![s("no ts"), Value::Array(vec![])])),
            "no timestamp",
        ),
        (
            encode(&Value::Array(vec![Value::from(1.0), Value::from(2)])),
            "events are not an array",
        ),
        (
            encode(&Value::Array(vec![
                Value::from(1.0),
                Value::Array(vec![]),
                Value::from(-1),
            ])),
            "DP rank",
        ),
        (
            encode(&Value::Array(vec![
                Value::from(1.0),
                Value::Array(vec![Value::from(7)]),
            ])),
            "no type tag",
        ),
        (
            encode(&Value::Array(vec![
                Value::from(1.0),
                Value::Array(vec![Value::Array(vec![
                    s("BlockStored"),
                    ints(&[1]),
                    Value::Nil,
                    ints(&[-1]),
                    Value::from(1),
                ])]),
            ])),
            "token id",
        ),
        (
            encode(&Value::Array(vec![
                Value::from(1.0),
                Value::Array(vec![Value::Array(vec![
                    s("BlockRemoved"),
                    Value::Array(vec![s("x")]),
                ])]),
            ])),
            "block hash",
        ),
    ];
    for (payload, expected) in cases {
        let error = decode(&payload).unwrap_err().to_string();
        assert!(
            error.contains(expected),
            "{payload:?}: {expected:?} not in {error:?}"
        );
    }
}

/// The fuzzer's seeds are one batch of each encoding, and stay so.
#[test]
fn the_fuzz_seeds_are_one_batch_of_each_encoding() {
    let seeds: [&[u8]; 3] = [
        include_bytes!("../../../../fuzz/corpus/kv_events/sglang.msgpack"),
        include_bytes!("../../../../fuzz/corpus/kv_events/vllm_arrays.msgpack"),
        include_bytes!("../../../../fuzz/corpus/kv_events/vllm_maps.msgpack"),
    ];
    let batches: Vec<Batch> = seeds.iter().map(|s| decode(s).unwrap()).collect();
    assert_eq!(batches[0].events.len(), 4);
    assert_eq!(batches[1].dp_rank, Some(1));
    assert!(matches!(&batches[1].events[0], Event::Stored(s) if s.lora_seed != 0));
    assert!(matches!(&batches[2].events[0], Event::Stored(s) if s.medium == Medium::Cpu));
}
