use std::sync::atomic::Ordering;
use std::time::Instant;

use super::log::clean;
use super::*;
use crate::policy::bindings::v2::wasm_router::policy::{
    metrics as wit_metrics, prefix_index, types,
};

#[test]
fn state_set_get_remove_and_bytes_accounting() {
    let store = Store::default();
    assert_eq!(store.get("a"), None);
    store.set("a", b"one".to_vec()).unwrap();
    store.set("a", b"three".to_vec()).unwrap();
    assert_eq!(store.get("a").as_deref(), Some(&b"three"[..]));
    assert_eq!(store.len(), 1);
    assert_eq!(store.bytes.load(Ordering::Relaxed), 1 + 5);
    store.remove("a");
    store.remove("a");
    assert!(store.is_empty());
    assert_eq!(store.bytes.load(Ordering::Relaxed), 0);
}

/// Pass/fail pairs at each bound: the last that fits is kept, the first past
/// it is refused and changes nothing.
#[test]
fn state_bounds_hold() {
    let store = Store::default();
    store.set(&"k".repeat(MAX_STATE_KEY), vec![]).unwrap();
    assert!(store.set(&"k".repeat(MAX_STATE_KEY + 1), vec![]).is_err());
    store.set("v", vec![0; MAX_STATE_VALUE]).unwrap();
    assert!(store.set("v", vec![0; MAX_STATE_VALUE + 1]).is_err());
    assert_eq!(store.get("v").map(|v| v.len()), Some(MAX_STATE_VALUE));

    let store = Store::default();
    for i in 0..MAX_STATE_KEYS {
        store.set(&i.to_string(), vec![]).unwrap();
    }
    let err = store.set("one more", vec![]).unwrap_err();
    assert!(err.contains("remove some first"), "{err}");
    assert_eq!(store.len(), MAX_STATE_KEYS);
    // Replacing a key is not a new key.
    store.set("0", vec![1]).unwrap();

    let store = Store::default();
    let per = MAX_STATE_VALUE;
    let fit = MAX_STATE_BYTES / (per + 8);
    for i in 0..fit {
        store.set(&format!("{i:08}"), vec![0; per]).unwrap();
    }
    assert!(store.set("past the total", vec![0; per]).is_err());
    assert_eq!(store.len(), fit, "a refused set keeps no key");
    assert!(store.bytes.load(Ordering::Relaxed) <= MAX_STATE_BYTES);
}

#[test]
fn state_add_counts_across_threads() {
    let store = Arc::new(Store::default());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    store.add("n", 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.add("n", 0), Ok(4000));
    store.set("text", b"abc".to_vec()).unwrap();
    assert!(store.add("text", 1).is_err(), "not a counter");
    store.add("big", i64::MAX).unwrap();
    assert!(store.add("big", 1).is_err(), "overflow is refused");
}

#[test]
fn log_bucket_holds_back_a_flood_and_refills() {
    let start = Instant::now();
    let mut bucket = LogBucket::full(start);
    let passed = (0..1000).filter(|_| bucket.take(start).is_some()).count();
    assert_eq!(passed, LOG_BURST as usize);
    // A second later, LOG_PER_SECOND lines pass, the first saying how many
    // were held back.
    let later = start + std::time::Duration::from_secs(1);
    assert_eq!(bucket.take(later), Some(1000 - LOG_BURST as u64));
    let more = (0..100).filter(|_| bucket.take(later).is_some()).count();
    assert_eq!(more + 1, LOG_PER_SECOND as usize);
}

#[test]
fn clean_cuts_and_removes_control_characters() {
    assert_eq!(clean("a\nb\u{1b}c", 100), "a b c");
    assert_eq!(clean("ééé", 3), "é");
}

#[test]
fn metrics_declare_validates_and_caps() {
    let shelf = HostShelf::default();
    let mut host = Host::new(shelf.get("p"));
    use wit_metrics::{Host as _, Kind};
    assert!(
        host.declare("Bad-Name".into(), Kind::Counter, String::new(), None)
            .is_err()
    );
    assert!(
        host.declare("faults_total".into(), Kind::Counter, String::new(), None)
            .is_err()
    );
    assert!(
        host.declare(
            "x".into(),
            Kind::Counter,
            String::new(),
            Some("policy".into())
        )
        .is_err()
    );
    let picks = host
        .declare(
            "picks_total".into(),
            Kind::Counter,
            "h".into(),
            Some("worker".into()),
        )
        .unwrap();
    assert_eq!(
        host.declare(
            "picks_total".into(),
            Kind::Counter,
            "h".into(),
            Some("worker".into())
        ),
        Ok(picks),
        "declaring again gives the same handle"
    );
    assert!(
        host.declare("picks_total".into(), Kind::Gauge, "h".into(), None)
            .is_err()
    );
    for i in 1..MAX_METRICS {
        host.declare(format!("m{i}"), Kind::Gauge, String::new(), None)
            .unwrap();
    }
    assert!(
        host.declare("one_too_many".into(), Kind::Gauge, String::new(), None)
            .is_err()
    );
    // Label values past the cap share `other`.
    for i in 0..MAX_LABEL_VALUES + 10 {
        host.record(picks, i.to_string(), 1.0);
    }
    let declared = lock(&host.policy.metrics);
    let values = &declared[picks as usize].values;
    assert_eq!(values.len(), MAX_LABEL_VALUES + 1);
    assert!(values.contains_key("other"));
}

#[test]
fn a_policy_key_is_the_file_stem() {
    use super::super::PolicySource;
    assert_eq!(
        policy_key(&PolicySource::File("/x/policies/cache_aware.wasm".into())),
        "cache_aware"
    );
    assert_eq!(policy_key(&PolicySource::Builtin("random")), "random");
}

/// `match-kv` given no tokens tokenizes the first 8 KiB only, matches pages
/// there, and estimates the prompt's tokens past them at their rate; given
/// the request's tokens, it counts and matches them all.
#[test]
fn match_kv_tokenizes_a_long_text_in_part_and_estimates_the_rest_unless_given_its_tokens() {
    use crate::index::{Medium, Precise, StoredPages};
    let tokenizer = crate::tokenizer::Tokenizer::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/cli/assets/tokenizer/tokenizer.json"
    )))
    .unwrap();
    // English up to the cut, then text at a very different rate of tokens
    // per byte: an estimate and a full count then disagree.
    let sentence = "Routers follow the workers' caches through their events. ";
    let mut text = sentence.repeat(MAX_KV_TOKENIZE_BYTES / sentence.len() + 1);
    text.truncate(MAX_KV_TOKENIZE_BYTES);
    text.push_str(&"漢字のテキスト".repeat(800));
    let head = tokenizer
        .encode(&text[..MAX_KV_TOKENIZE_BYTES], true)
        .unwrap();
    let all = tokenizer.encode(&text, true).unwrap();
    let full = all.len() as f64;
    let index = Arc::new(Precise::default());
    let pages = head.len() / 16;
    let hashes: Vec<u64> = (0..pages as u64).collect();
    index
        .store(
            1,
            StoredPages {
                medium: Medium::Gpu,
                parent: None,
                hashes: &hashes,
                tokens: &head[..pages * 16],
                block_size: 16,
                seed: 0,
            },
        )
        .unwrap();
    let shelf = HostShelf::with_kv(KvView {
        index: Some(index),
        tokenizer: Some(Arc::new(tokenizer)),
    });
    let mut host = Host::new(shelf.get("p"));
    let req = generate(&text);
    let (lent, _) = host.lend(&req, &[]);
    use prefix_index::Host as _;
    let found = host.match_kv(lent, vec![1, 2]);
    let whole = head.len() as f64 * text.len() as f64 / MAX_KV_TOKENIZE_BYTES as f64;
    assert!(
        (f64::from(found.prompt_tokens) - whole).abs() < 2.0,
        "{} tokens, estimated {whole}",
        found.prompt_tokens
    );
    assert!(
        (whole - full).abs() > full / 4.0,
        "the test's tail must tokenize at another rate ({whole} against {full})"
    );
    assert_eq!(found.matches[0].map(|m| m.gpu), Some(pages as u32 * 16));
    assert!(found.matches[1].is_none(), "worker 2 is not followed");
    // Tokenized before the call (the router does, with `--kv-events`): the
    // whole text's tokens are counted and matched, no estimate.
    let req = RouteRequest {
        tokens: Some(&all),
        ..req
    };
    let (lent, _) = host.lend(&req, &[]);
    let found = host.match_kv(lent, vec![1, 2]);
    assert_eq!(f64::from(found.prompt_tokens), full);
    assert_eq!(found.matches[0].map(|m| m.gpu), Some(pages as u32 * 16));
}

/// A `/generate` request with routing text `text`, nothing else known.
fn generate(text: &str) -> RouteRequest<'_> {
    RouteRequest {
        id: 1,
        route: crate::route::Route::Generate,
        model: "",
        text,
        tokens: None,
        routing_key: None,
        headers: None,
        stream: false,
        max_new_tokens: None,
    }
}

/// `text-prefix` copies at least what was asked, up to the end of the
/// character it falls in, and never more than the text.
#[test]
fn text_prefix_ends_on_a_character_boundary_at_or_past_the_bytes_asked() {
    let mut host = Host::new(HostShelf::default().get("p"));
    let text = "aé世z";
    let req = generate(text);
    use types::HostRequest as _;
    let (lent, _) = host.lend(&req, &[]);
    let mut prefix = |n| host.text_prefix(Resource::new_borrow(lent.rep()), n);
    // a (1 byte), é (2), 世 (3), z (1).
    assert_eq!(prefix(0), "");
    assert_eq!(prefix(1), "a");
    assert_eq!(prefix(2), "aé", "byte 2 is inside é");
    assert_eq!(prefix(3), "aé");
    assert_eq!(prefix(4), "aé世");
    assert_eq!(prefix(7), "aé世z");
    assert_eq!(prefix(u32::MAX), text);
}
