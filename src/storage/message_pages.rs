//! The board in the store: messages in pages of [`PAGE_LEN`] consecutive indexes, one value
//! per page, instead of one value per message.
//!
//! Page `p` holds the messages with indexes `p * PAGE_LEN + 1 ..= (p + 1) * PAGE_LEN`, in
//! order and from its first; the last page may hold fewer. Messages are gapless and written
//! in order, so a flush fills up the last page it finds and adds whole new ones. Why:
//! a flush of a few thousand messages was a few thousand B-tree inserts, which took most of
//! the flush's CPU; as pages it is a few dozen, and the bytes written are the same. A read of
//! one message decodes its page (at most `PAGE_LEN` records).
//!
//! Stores written before pages kept one value per message in a table named `messages`;
//! [`migrate_single_messages`] moves them into pages when such a store is opened.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::store::{decode, store_error};
use crate::app::MessageRecord;
use crate::error::{Error, Result};

/// Page number → the page's records (postcard, a sequence of [`MessageRecord`]).
pub(super) const MESSAGE_PAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("message_pages");
/// Messages per page.
pub(super) const PAGE_LEN: u64 = 64;
/// The table of stores from before pages: index → one record.
const SINGLE_MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");

/// The page that holds message `index` (from 1), and its slot there.
fn page_of(index: u64) -> (u64, usize) {
    let from_zero = index.saturating_sub(1);
    (from_zero / PAGE_LEN, (from_zero % PAGE_LEN) as usize)
}

fn decode_page(bytes: &[u8]) -> Result<Vec<MessageRecord>> {
    decode(bytes, "message page")
}

/// Writes `messages` into their pages, over any stored under the same indexes. Refuses
/// (before writing the page) a message that would leave a gap in its page: a read would not
/// find it.
pub(super) fn put(
    table: &mut Table<u64, &[u8]>,
    messages: &BTreeMap<u64, MessageRecord>,
) -> Result<()> {
    let mut remaining = messages.iter().peekable();
    let mut bytes = Vec::new();
    while let Some(&(&first, _)) = remaining.peek() {
        if first == 0 {
            return Err(Error::Internal("a message with index 0".to_string()));
        }
        let (page, _) = page_of(first);
        // The page's records so far: a flush usually continues a partial page, and starts
        // the pages after it afresh (those are not in the table yet).
        let kept = match table
            .get(page)
            .map_err(|e| store_error("message pages")(&e))?
        {
            Some(value) => decode_page(value.value())?,
            None => Vec::new(),
        };
        let mut records: Vec<Cow<'_, MessageRecord>> = kept.into_iter().map(Cow::Owned).collect();
        while let Some(&(&index, record)) = remaining.peek() {
            let (in_page, slot) = page_of(index);
            if in_page != page {
                break;
            }
            match slot.cmp(&records.len()) {
                Ordering::Less => records[slot] = Cow::Borrowed(record),
                Ordering::Equal => records.push(Cow::Borrowed(record)),
                Ordering::Greater => {
                    return Err(Error::Internal(format!(
                        "message {index} would leave a gap: its page holds {} before it",
                        records.len()
                    )));
                }
            }
            remaining.next();
        }
        bytes.clear();
        bytes = postcard::to_extend(&records, bytes)
            .map_err(|err| Error::Internal(format!("encoding a message page: {err}")))?;
        table
            .insert(page, bytes.as_slice())
            .map_err(|e| store_error("message pages")(&e))?;
    }
    Ok(())
}

/// The message with this index.
pub(super) fn get(
    table: &impl ReadableTable<u64, &'static [u8]>,
    index: u64,
) -> Result<Option<MessageRecord>> {
    if index == 0 {
        return Ok(None);
    }
    let (page, slot) = page_of(index);
    let Some(value) = table
        .get(page)
        .map_err(|e| store_error("message pages")(&e))?
    else {
        return Ok(None);
    };
    let mut records = decode_page(value.value())?;
    Ok((slot < records.len()).then(|| records.swap_remove(slot)))
}

/// The messages with index >= `from`, at most `limit`, in index order.
pub(super) fn range(
    table: &impl ReadableTable<u64, &'static [u8]>,
    from: u64,
    limit: u64,
) -> Result<Vec<(u64, MessageRecord)>> {
    let from = from.max(1);
    let (first_page, _) = page_of(from);
    let mut found = Vec::new();
    for row in table
        .range(first_page..)
        .map_err(|e| store_error("message pages")(&e))?
    {
        let (page, value) = row.map_err(|e| store_error("message pages")(&e))?;
        let first = page.value() * PAGE_LEN + 1;
        for (index, record) in (first..).zip(decode_page(value.value())?) {
            if found.len() as u64 >= limit {
                return Ok(found);
            }
            if index >= from {
                found.push((index, record));
            }
        }
    }
    Ok(found)
}

/// Moves the messages of a store from before pages into pages, in the transaction that
/// opens it, and drops their old table. Nothing to do for a newer store.
pub(super) fn migrate_single_messages(txn: &WriteTransaction) -> Result<()> {
    /// Messages moved per step, to bound the memory a large board takes.
    const STEP: usize = 4096;
    let migrate = store_error("migrating messages");
    {
        let old = txn.open_table(SINGLE_MESSAGES).map_err(|e| migrate(&e))?;
        let mut pages = txn.open_table(MESSAGE_PAGES).map_err(|e| migrate(&e))?;
        let mut step = BTreeMap::new();
        for row in old.iter().map_err(|e| migrate(&e))? {
            let (index, value) = row.map_err(|e| migrate(&e))?;
            step.insert(index.value(), decode(value.value(), "message")?);
            if step.len() == STEP {
                put(&mut pages, &std::mem::take(&mut step))?;
            }
        }
        put(&mut pages, &step)?;
    }
    txn.delete_table(SINGLE_MESSAGES).map_err(|e| migrate(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase};

    use super::*;

    fn message(index: u64) -> MessageRecord {
        MessageRecord {
            client_id: format!("c{}", index % 3),
            username: "alice".to_string(),
            seq: index,
            text: format!("message {index}"),
        }
    }

    fn messages(indexes: std::ops::RangeInclusive<u64>) -> BTreeMap<u64, MessageRecord> {
        indexes.map(|index| (index, message(index))).collect()
    }

    fn database() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("store")).unwrap();
        (dir, db)
    }

    fn write(db: &Database, batch: &BTreeMap<u64, MessageRecord>) -> Result<()> {
        let txn = db.begin_write().unwrap();
        let result = {
            let mut table = txn.open_table(MESSAGE_PAGES).unwrap();
            put(&mut table, batch)
        };
        txn.commit().unwrap();
        result
    }

    fn read_all(db: &Database) -> Vec<(u64, MessageRecord)> {
        let txn = db.begin_read().unwrap();
        range(&txn.open_table(MESSAGE_PAGES).unwrap(), 0, u64::MAX).unwrap()
    }

    /// Flushes that end mid-page are continued by the next: whatever the batches, the board
    /// reads back whole, one message and any range at a time.
    #[test]
    fn batches_that_end_mid_page_read_back_as_one_board() {
        let (_dir, db) = database();
        let mut last = 0;
        for len in [1, 5, 58, 64, 1, 200, 63, 2] {
            write(&db, &messages(last + 1..=last + len)).unwrap();
            last += len;
        }
        let all = read_all(&db);
        assert_eq!(all, messages(1..=last).into_iter().collect::<Vec<_>>());
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(MESSAGE_PAGES).unwrap();
        for index in [1, 63, 64, 65, 128, 129, last] {
            assert_eq!(get(&table, index).unwrap(), Some(message(index)));
        }
        assert_eq!(get(&table, 0).unwrap(), None);
        assert_eq!(get(&table, last + 1).unwrap(), None);
        for (from, limit) in [(0, 3), (1, 64), (60, 10), (64, 65), (130, 1000), (last, 5)] {
            let want: Vec<_> = all
                .iter()
                .filter(|(index, _)| *index >= from)
                .take(limit as usize)
                .cloned()
                .collect();
            assert_eq!(range(&table, from, limit).unwrap(), want, "from {from}");
        }
        assert!(range(&table, last + 1, 10).unwrap().is_empty());
    }

    /// A batch that would leave a gap in a page is refused rather than stored where a read
    /// would not find it; a message written again replaces the stored one, as a table keyed
    /// by index would.
    #[test]
    fn a_gap_is_refused_and_a_rewrite_replaces() {
        let (_dir, db) = database();
        write(&db, &messages(1..=10)).unwrap();
        assert!(write(&db, &messages(12..=13)).is_err(), "a gap");
        let mut gapped = messages(11..=12);
        gapped.insert(14, message(14));
        assert!(write(&db, &gapped).is_err(), "a gap inside the batch");
        assert!(
            write(&db, &messages(70..=70)).is_err(),
            "a gap before a new page"
        );
        assert_eq!(
            read_all(&db),
            messages(1..=10).into_iter().collect::<Vec<_>>()
        );

        let mut rewritten = messages(5..=12);
        rewritten.get_mut(&6).unwrap().text = "rewritten".to_string();
        write(&db, &rewritten).unwrap();
        let mut want = messages(1..=12);
        want.get_mut(&6).unwrap().text = "rewritten".to_string();
        assert_eq!(read_all(&db), want.clone().into_iter().collect::<Vec<_>>());

        // From a page's first slot too: what follows in the page stays.
        let mut from_the_start = messages(1..=2);
        from_the_start.get_mut(&1).unwrap().text = "first again".to_string();
        write(&db, &from_the_start).unwrap();
        want.get_mut(&1).unwrap().text = "first again".to_string();
        assert_eq!(read_all(&db), want.into_iter().collect::<Vec<_>>());
    }

    /// A store from before pages (one value per message) opens with its board in pages.
    #[test]
    fn a_store_of_single_messages_is_moved_into_pages() {
        let (_dir, db) = database();
        let board = messages(1..=5000);
        let txn = db.begin_write().unwrap();
        {
            let mut old = txn.open_table(SINGLE_MESSAGES).unwrap();
            for (index, record) in &board {
                old.insert(*index, postcard::to_stdvec(record).unwrap().as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();

        let txn = db.begin_write().unwrap();
        migrate_single_messages(&txn).unwrap();
        txn.commit().unwrap();
        assert_eq!(read_all(&db), board.into_iter().collect::<Vec<_>>());
        let txn = db.begin_read().unwrap();
        assert!(
            txn.open_table(SINGLE_MESSAGES).is_err(),
            "the old table is gone"
        );
    }
}
