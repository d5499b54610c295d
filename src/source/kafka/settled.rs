//! Whether the group has placed every partition: `--until-end` asks before a member that
//! reached the end of what it holds calls itself done.
//!
//! A cooperative rebalance moves a partition in two rounds: the first revokes it from its
//! holder and assigns it to nobody, the second (once the holder gave it up) assigns it
//! anew. A member joining a running group is assigned nothing in the first round, so
//! holding nothing then does not mean nothing more comes. The group's coordinator knows
//! every member's assignment (the `DescribeGroups` answer librdkafka's group list carries):
//! while a partition of the topic is in none, or the group is rebalancing, it is in flight.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::client::{Client, ClientContext};

/// How long the coordinator may take to describe the group.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// True when the group is stable and its members' assignments cover `partitions` of
/// `topic`; false while one is in flight, or when the coordinator cannot say.
pub(super) fn every_partition_placed<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    topic: &str,
    partitions: &BTreeSet<i32>,
) -> bool {
    let Ok(list) = client.fetch_group_list(Some(group), DESCRIBE_TIMEOUT) else { return false };
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else { return false };
    if info.state() != "Stable" {
        return false;
    }
    let mut placed = BTreeSet::new();
    for member in info.members() {
        let Some(bytes) = member.assignment() else { continue };
        let Some(assigned) = assigned_partitions(bytes, topic) else { return false };
        placed.extend(assigned);
    }
    partitions.is_subset(&placed)
}

/// The partitions of `topic` in a consumer protocol assignment (Kafka's
/// `ConsumerProtocolAssignment`: version, then topics with their partitions, then user
/// data, which is not read); `None` when the bytes are not one.
fn assigned_partitions(bytes: &[u8], topic: &str) -> Option<Vec<i32>> {
    let mut r = Reader(bytes);
    let _version = r.i16()?;
    let mut found = Vec::new();
    for _ in 0..r.i32()? {
        let len = usize::try_from(r.i16()?).ok()?;
        let name = r.take(len)?;
        for _ in 0..r.i32()? {
            let p = r.i32()?;
            if name == topic.as_bytes() {
                found.push(p);
            }
        }
    }
    Some(found)
}

/// Big-endian fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::assigned_partitions;

    /// An assignment as Kafka's consumer protocol encodes it.
    fn encoded(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = 1i16.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (name, partitions) in topics {
            b.extend((name.len() as i16).to_be_bytes());
            b.extend(name.as_bytes());
            b.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // no user data
        b
    }

    #[test]
    fn the_partitions_of_the_topic_are_read_from_an_assignment() {
        let bytes = encoded(&[("other", &[0, 1]), ("views", &[3, 1]), ("views-2", &[7])]);
        assert_eq!(assigned_partitions(&bytes, "views"), Some(vec![3, 1]));
        assert_eq!(assigned_partitions(&encoded(&[]), "views"), Some(vec![]));
        assert_eq!(assigned_partitions(&bytes[..bytes.len() - 9], "views"), None, "cut short");
    }
}
