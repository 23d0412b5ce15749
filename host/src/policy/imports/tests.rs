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

/// Issue 31: `match-kv` never tokenizes inside the policy's call. Given
/// no tokens it matches nothing and counts none; given the request's
/// tokens, it counts and matches them all.
#[test]
fn match_kv_matches_the_tokens_given_and_tokenizes_nothing() {
    use crate::index::{Medium, Precise, StoredPages};
    let tokens: Vec<u32> = (0..40).collect();
    let index = Arc::new(Precise::default());
    let hashes: Vec<u64> = (0..2).collect();
    index.follow(1);
    index
        .store(
            1,
            StoredPages {
                medium: Medium::Gpu,
                parent: None,
                hashes: &hashes,
                tokens: &tokens[..32],
                block_size: 16,
                seed: 0,
            },
        )
        .unwrap();
    let shelf = HostShelf::with_kv(KvView {
        index: Some(index),
        tokenizer: None,
    });
    let mut host = Host::new(shelf.get("p"));
    use prefix_index::Host as _;
    let req = generate("a text the router did not tokenize");
    let (lent, _) = host.lend(&req, &[]);
    let found = host.match_kv(lent, vec![1, 2]);
    assert_eq!(found.prompt_tokens, 0);
    assert_eq!(found.matches[0].map(|m| m.gpu), Some(0));
    let req = RouteRequest {
        tokens: Some(&tokens),
        ..req
    };
    let (lent, _) = host.lend(&req, &[]);
    let found = host.match_kv(lent, vec![1, 2]);
    assert_eq!(found.prompt_tokens, 40);
    assert_eq!(found.matches[0].map(|m| m.gpu), Some(32));
    assert!(found.matches[1].is_none(), "worker 2 is not followed");
    // The text's start only (no worker held more): matched as far as it
    // goes, counted as the whole.
    let req = RouteRequest {
        tokens: Some(&tokens[..32]),
        prompt_tokens: Some(500),
        ..req
    };
    let (lent, _) = host.lend(&req, &[]);
    let found = host.match_kv(lent, vec![1, 2]);
    assert_eq!(found.prompt_tokens, 500);
    assert_eq!(found.matches[0].map(|m| m.gpu), Some(32));
}

/// Issue 31: a policy that matches KV pages is refused by a router that
/// could not match them, naming the flags that are missing.
#[test]
fn a_router_without_events_or_tokenizer_says_which_flag_is_missing() {
    let tokenizer = Arc::new(
        crate::tokenizer::Tokenizer::load(
            std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/cli/assets/tokenizer/tokenizer.json"
            )),
            Default::default(),
        )
        .unwrap(),
    );
    let index = Some(Arc::new(crate::index::Precise::default()));
    for (kv, missing) in [
        (KvView::default(), Some("--kv-events and --tokenizer-path")),
        (
            KvView {
                index: None,
                tokenizer: Some(tokenizer.clone()),
            },
            Some("with --kv-events"),
        ),
        (
            KvView {
                index: index.clone(),
                tokenizer: None,
            },
            Some("with --tokenizer-path"),
        ),
        (
            KvView {
                index,
                tokenizer: Some(tokenizer),
            },
            None,
        ),
    ] {
        match (kv.check_matchable("precise"), missing) {
            (Ok(()), None) => {}
            (Err(e), Some(flag)) => {
                let message = e.to_string();
                assert!(message.contains(flag), "{flag:?} not in {message}");
                assert!(message.contains("precise"), "{message}");
            }
            (result, missing) => panic!("{result:?} for {missing:?}"),
        }
    }
}

/// A `/generate` request with routing text `text`, nothing else known.
fn generate(text: &str) -> RouteRequest<'_> {
    RouteRequest {
        id: 1,
        route: crate::route::Route::Generate,
        model: "",
        text,
        tokens: None,
        prompt_tokens: None,
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
