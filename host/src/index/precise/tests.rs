use super::*;

fn pages<'a>(
    medium: Medium,
    parent: Option<u64>,
    hashes: &'a [u64],
    tokens: &'a [u32],
    block_size: u32,
    seed: u64,
) -> StoredPages<'a> {
    StoredPages {
        medium,
        parent,
        hashes,
        tokens,
        block_size,
        seed,
    }
}

/// Three pages of four tokens, and a fourth that no worker holds.
fn prompt() -> Vec<u32> {
    (1..=16).collect()
}

fn page(n: usize) -> &'static [u32] {
    const TOKENS: [u32; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
    &TOKENS[n * 4..n * 4 + 4]
}

/// Worker `w` stores pages 0..3 of the prompt on GPU, one event per page,
/// each naming its parent by the engine's hash `base + n`.
fn store_three(index: &Precise, w: WorkerId, base: u64) {
    for n in 0..3 {
        let parent = (n > 0).then(|| base + n as u64 - 1);
        index
            .store(
                w,
                pages(Medium::Gpu, parent, &[base + n as u64], page(n), 4, 0),
            )
            .unwrap();
    }
}

fn gpu(m: &[Matched]) -> Vec<u32> {
    m.iter().map(|m| m.gpu).collect()
}

#[test]
fn a_stored_chain_matches_its_prefix_whatever_the_engines_hashes() {
    let index = Precise::default();
    store_three(&index, 1, 100);
    // Worker 2 names the same pages otherwise, in one event.
    index
        .store(
            2,
            pages(Medium::Gpu, None, &[7, 8, 9], &prompt()[..12], 4, 0),
        )
        .unwrap();
    assert_eq!(gpu(&index.matched(&prompt(), &[1, 2, 3])), [12, 12, 0]);
    assert_eq!(index.len(), 6);
    let diverging: Vec<u32> = [1, 2, 3, 4, 5, 6, 0, 8, 9, 10, 11, 12].to_vec();
    assert_eq!(gpu(&index.matched(&diverging, &[1, 2])), [4, 4]);
    assert_eq!(
        gpu(&index.matched(&prompt()[..7], &[1])),
        [4],
        "full pages only"
    );
}

#[test]
fn a_removed_page_ends_the_prefix_and_offloaded_pages_count_by_medium() {
    let index = Precise::default();
    store_three(&index, 1, 100);
    index.remove(1, Medium::Gpu, &[101]);
    assert_eq!(gpu(&index.matched(&prompt(), &[1])), [4]);
    // The page moved to host memory: GPU prefix 4, GPU-or-CPU 12.
    index
        .store(1, pages(Medium::Cpu, Some(100), &[101], page(1), 4, 0))
        .unwrap();
    assert_eq!(
        index.matched(&prompt(), &[1]),
        [Matched {
            gpu: 4,
            cpu: 12,
            disk: 12
        }]
    );
    // Unknown hashes are ignored; removing the last copy frees the entry.
    index.remove(1, Medium::Disk, &[555, 101]);
    index.remove(1, Medium::Cpu, &[101]);
    assert_eq!(index.pages_of(1), 2);
    assert_eq!(index.len(), 2);
}

#[test]
fn a_missed_parent_or_a_bad_shape_stores_nothing() {
    let index = Precise::default();
    assert_eq!(
        index.store(1, pages(Medium::Gpu, Some(42), &[43], page(1), 4, 0)),
        Err(StoreError::Orphan(42))
    );
    assert!(matches!(
        index.store(1, pages(Medium::Gpu, None, &[1, 2], page(0), 4, 0)),
        Err(StoreError::Shape {
            tokens: 4,
            pages: 2,
            block_size: 4
        })
    ));
    assert!(matches!(
        index.store(1, pages(Medium::Gpu, None, &[1], &[], 0, 0)),
        Err(StoreError::Shape { .. })
    ));
    assert!(index.is_empty());
    index
        .store(1, pages(Medium::Gpu, None, &[1], page(0), 4, 0))
        .unwrap();
    assert_eq!(
        index.store(1, pages(Medium::Gpu, None, &[2], &page(0)[..2], 2, 0)),
        Err(StoreError::BlockSize { had: 4, got: 2 })
    );
}

#[test]
fn clearing_or_dropping_a_worker_forgets_its_pages_only() {
    let index = Precise::default();
    store_three(&index, 1, 100);
    store_three(&index, 2, 200);
    index.clear(1);
    assert_eq!(gpu(&index.matched(&prompt(), &[1, 2])), [0, 12]);
    assert_eq!(index.len(), 3);
    // After a clear the page size may change.
    index
        .store(1, pages(Medium::Gpu, None, &[1], &prompt()[..2], 2, 0))
        .unwrap();
    assert_eq!(gpu(&index.matched(&prompt(), &[1, 2])), [2, 12]);
    index.drop_worker(2);
    assert_eq!(gpu(&index.matched(&prompt(), &[2])), [0]);
    assert_eq!(index.len(), 1);
    // A new worker takes the dropped one's number, and none of its pages.
    index.follow(9);
    assert_eq!(gpu(&index.matched(&prompt(), &[9, 2, 1])), [0, 0, 2]);
    store_three(&index, 9, 900);
    assert_eq!(gpu(&index.matched(&prompt(), &[1, 9])), [2, 12]);
}

#[test]
fn limits_hold_per_worker_and_in_total() {
    let index = Precise::with_limits(3, 2);
    assert_eq!(
        index.store(
            1,
            pages(Medium::Gpu, None, &[1, 2, 3], &prompt()[..12], 4, 0)
        ),
        Err(StoreError::Full)
    );
    assert_eq!(index.pages_of(1), 2, "the pages before the limit stay");
    index
        .store(2, pages(Medium::Gpu, None, &[1], page(0), 4, 0))
        .unwrap();
    assert_eq!(
        index.store(3, pages(Medium::Gpu, None, &[1], page(0), 4, 0)),
        Err(StoreError::Full)
    );
    // The same page on another medium is no new entry.
    index
        .store(2, pages(Medium::Cpu, None, &[1], page(0), 4, 0))
        .unwrap();
    assert_eq!(index.len(), 3);
}

#[test]
fn pages_under_an_adapter_do_not_match_base_model_requests() {
    let index = Precise::default();
    index
        .store(1, pages(Medium::Gpu, None, &[1], page(0), 4, 7))
        .unwrap();
    assert_eq!(gpu(&index.matched(&prompt(), &[1])), [0]);
    assert_eq!(page_keys(page(0), 4, 7), [page_key(7, page(0))]);
}

#[test]
fn an_engine_hash_reused_for_other_tokens_replaces_its_page() {
    let index = Precise::default();
    index
        .store(1, pages(Medium::Gpu, None, &[7], page(0), 4, 0))
        .unwrap();
    index
        .store(1, pages(Medium::Gpu, None, &[7], page(1), 4, 0))
        .unwrap();
    assert_eq!(index.len(), 1);
    assert_eq!(
        gpu(&index.matched(&prompt(), &[1])),
        [0],
        "page 0 is no longer held"
    );
    assert_eq!(gpu(&index.matched(&prompt()[4..], &[1])), [4]);
    index.remove(1, Medium::Gpu, &[7]);
    assert!(index.is_empty());
    assert_eq!(gpu(&index.matched(&prompt()[4..], &[1])), [0]);
}

/// Issue 31: the router tokenizes a prompt on only while some worker
/// holds every whole page so far.
#[test]
fn pages_past_the_held_ones_can_match_only_while_every_page_is_held() {
    let index = Precise::default();
    let all = prompt();
    assert!(
        !index.holds_every_page_of(&all[..3]),
        "no worker holds pages"
    );
    store_three(&index, 1, 100);
    assert!(index.holds_every_page_of(&all[..3]), "less than a page");
    assert!(
        index.holds_every_page_of(&all[..12]),
        "the three held pages"
    );
    assert!(
        index.holds_every_page_of(&all[..14]),
        "and part of the next"
    );
    assert!(
        !index.holds_every_page_of(&all),
        "the fourth page is held by none"
    );
    let other: Vec<u32> = (100..112).collect();
    assert!(!index.holds_every_page_of(&other), "another prompt");
}
