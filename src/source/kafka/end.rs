//! `--until-end`: the end offsets seen at start, and whether this member has read to them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::info;

use super::{client, settled, KafkaSource, METADATA_TIMEOUT};

impl KafkaSource {
    /// `--until-end`: the end offsets at start, and where each partition starts.
    pub(super) fn fetch_targets(&mut self) -> Result<(), KafkaError> {
        let metadata = self.consumer.fetch_metadata(Some(&self.config.topic), METADATA_TIMEOUT)?;
        let topic = metadata.topics().iter().find(|t| t.name() == self.config.topic);
        let partitions: Vec<i32> = match topic {
            Some(t) if t.error().is_none() => t.partitions().iter().map(|p| p.id()).collect(),
            _ => Vec::new(),
        };
        if partitions.is_empty() {
            return Err(KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition));
        }
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition(&self.config.topic, p);
        }
        let committed = self.consumer.committed_offsets(tpl, METADATA_TIMEOUT)?;
        let mut targets = BTreeMap::new();
        for &p in &partitions {
            let (low, high) = self.consumer.fetch_watermarks(&self.config.topic, p, METADATA_TIMEOUT)?;
            targets.insert(p, high);
            let group = committed.find_partition(&self.config.topic, p).and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
            self.floors.insert(p, group.unwrap_or(low).max(low));
        }
        info!(end_offsets = ?targets, "--until-end: reading up to these offsets");
        self.targets = Some(targets);
        Ok(())
    }

    /// `--until-end`: every partition this member holds has reached the end offset seen at
    /// start, and the group has placed every partition (none is in flight between members,
    /// `settled.rs`). Partitions held by other members are theirs to finish; a partition that
    /// moves away counts as done here. Nothing is done before the group's first assignment.
    pub(super) fn reached_end(&mut self) -> bool {
        let Some(targets) = &self.targets else { return false };
        let Ok(shared) = self.shared.lock() else { return false };
        if !shared.membership.settled() || !shared.assigned.is_empty() {
            return false;
        }
        let at_end = shared.owned.iter().all(|p| {
            // A partition created after the start has no target: what it held then was nothing.
            let end = targets.get(p).copied().unwrap_or(0);
            let at = shared.positions.get(p).copied().or_else(|| self.floors.get(p).copied()).unwrap_or(0);
            at >= end
        });
        drop(shared);
        if !at_end {
            return false;
        }
        // The coordinator is asked at most once a second.
        match self.placed {
            Some((placed, at)) if at.elapsed() < Duration::from_secs(1) => placed,
            _ => {
                let partitions = targets.keys().copied().collect();
                let config = &self.config;
                if self.describer.is_none() {
                    self.describer = client::metadata_client(config).ok();
                }
                let (group, topic) = (&config.group, &config.topic);
                let placed = match &self.describer {
                    Some(describer) => {
                        // Served, so the errors it reports do not pile up in its queue.
                        let _ = describer.poll(Duration::ZERO);
                        settled::every_partition_placed(describer.client(), group, topic, &partitions)
                    }
                    None => {
                        settled::every_partition_placed(self.consumer.client(), group, topic, &partitions)
                    }
                };
                self.placed = Some((placed, Instant::now()));
                placed
            }
        }
    }
}
