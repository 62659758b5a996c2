package dev.strand.it;

import static dev.strand.it.Clients.TIMEOUT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.stream.IntStream;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * KafkaConsumer against Strand: subscribe and assign, seek (also into a compressed batch),
 * beginning/end offsets, offsetsForTimes, committed offsets a new group member resumes from,
 * auto.offset.reset, a batch larger than max.partition.fetch.bytes, long polls on the tail.
 */
class ConsumerTest {
    static StrandBroker broker;

    @BeforeAll
    static void start() throws Exception {
        broker = StrandBroker.start("group.initial.rebalance.delay.ms=0");
    }

    @AfterAll
    static void stop() throws Exception {
        broker.close();
    }

    /** A topic holding `n` records "v0".."v{n-1}" keyed "k0".., spread by key over the partitions. */
    private static String topicWith(String prefix, int partitions, int n, Object... producerProps) throws Exception {
        String topic = Clients.uniqueTopic(prefix);
        Clients.createTopic(broker, topic, partitions);
        try (KafkaProducer<String, String> producer = Clients.producer(broker, producerProps)) {
            Clients.sendAll(producer, IntStream.range(0, n).mapToObj(i -> new ProducerRecord<>(topic, "k" + i, "v" + i)).toList());
        }
        return topic;
    }

    private static String groupId() {
        return Clients.uniqueTopic("group");
    }

    @Test
    void subscribeReadsEveryRecordOnce() throws Exception {
        String topic = topicWith("subscribe", 3, 90);
        try (KafkaConsumer<String, String> c = Clients.consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, groupId())) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<String, String>> got = Clients.pollCount(c, 90);
            Set<String> values = new HashSet<>();
            Set<String> positions = new HashSet<>();
            got.forEach(r -> {
                values.add(r.value());
                positions.add(r.partition() + "@" + r.offset());
                assertEquals(r.key().substring(1), r.value().substring(1));
            });
            assertEquals(90, values.size());
            assertEquals(90, positions.size());
            assertEquals(3, c.assignment().size());
            // Nothing more arrives.
            assertTrue(c.poll(Duration.ofMillis(300)).isEmpty());
        }
    }

    @Test
    void assignSeekAndOffsets() throws Exception {
        String topic = topicWith("seek", 1, 50);
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaConsumer<String, String> c = Clients.consumer(broker)) {
            c.assign(List.of(tp));
            assertEquals(Map.of(tp, 0L), c.beginningOffsets(List.of(tp)));
            assertEquals(Map.of(tp, 50L), c.endOffsets(List.of(tp)));
            c.seek(tp, 20);
            ConsumerRecord<String, String> first = Clients.pollCount(c, 1).get(0);
            assertEquals(20, first.offset());
            assertEquals("v20", first.value());
            c.seekToEnd(List.of(tp));
            assertEquals(50, c.position(tp));
            c.seekToBeginning(List.of(tp));
            assertEquals(0, c.position(tp));
            List<ConsumerRecord<String, String>> all = Clients.pollCount(c, 50);
            for (int i = 0; i < 50; i++) {
                assertEquals(i, all.get(i).offset());
                assertEquals("v" + i, all.get(i).value());
            }
        }
    }

    @Test
    void seekIntoACompressedBatchStartsAtThatRecord() throws Exception {
        // One producer batch of 100 lz4-compressed records.
        String topic = topicWith("seek-batch", 1, 100, ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4",
                ProducerConfig.LINGER_MS_CONFIG, 200);
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaConsumer<String, String> c = Clients.consumer(broker)) {
            c.assign(List.of(tp));
            c.seek(tp, 57);
            List<ConsumerRecord<String, String>> got = Clients.pollCount(c, 43);
            assertEquals(57, got.get(0).offset());
            assertEquals("v57", got.get(0).value());
            assertEquals(99, got.get(42).offset());
        }
    }

    @Test
    void offsetsForTimesFindsTheFirstRecordAtOrAfterTheTime() throws Exception {
        String topic = Clients.uniqueTopic("times");
        Clients.createTopic(broker, topic, 3);
        long base = System.currentTimeMillis() - 3_600_000;
        // Partition 0: one record per batch; partition 1: all in one batch; partition 2: all in
        // one compressed batch. Timestamps go back once (offset 3 is older than offset 2), as
        // CreateTime allows.
        long[] stamps = {base, base + 1000, base + 5000, base + 2000, base + 6000};
        try (KafkaProducer<String, String> producer = Clients.producer(broker, ProducerConfig.LINGER_MS_CONFIG, 100)) {
            for (int i = 0; i < stamps.length; i++) {
                producer.send(new ProducerRecord<>(topic, 0, stamps[i], "k", "v" + i)).get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
            }
            List<ProducerRecord<String, String>> oneBatch = new ArrayList<>();
            for (int i = 0; i < stamps.length; i++) {
                oneBatch.add(new ProducerRecord<>(topic, 1, stamps[i], "k", "v" + i));
            }
            Clients.sendAll(producer, oneBatch);
        }
        try (KafkaProducer<String, String> producer = Clients.producer(broker, ProducerConfig.LINGER_MS_CONFIG, 100,
                ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4")) {
            List<ProducerRecord<String, String>> compressed = new ArrayList<>();
            for (int i = 0; i < stamps.length; i++) {
                compressed.add(new ProducerRecord<>(topic, 2, stamps[i], "k", "v" + i));
            }
            Clients.sendAll(producer, compressed);
        }
        try (KafkaConsumer<String, String> c = Clients.consumer(broker)) {
            for (int p = 0; p < 3; p++) {
                TopicPartition tp = new TopicPartition(topic, p);
                assertFound(c, tp, base - 10_000L, 0, base);
                assertFound(c, tp, base, 0, base);
                assertFound(c, tp, base + 1, 1, base + 1000);
                // The first record with a timestamp >= target in offset order: offset 2 (5000), not 3 (2000).
                assertFound(c, tp, base + 1500, 2, base + 5000);
                assertFound(c, tp, base + 5500, 4, base + 6000);
                assertNull(c.offsetsForTimes(Map.of(tp, base + 6001)).get(tp), "after all, p" + p);
            }
        }
    }

    private static void assertFound(KafkaConsumer<String, String> c, TopicPartition tp, long target, long offset, long timestamp) {
        OffsetAndTimestamp found = c.offsetsForTimes(Map.of(tp, target)).get(tp);
        String what = tp + " at " + target + ": " + found;
        assertTrue(found != null, what);
        assertEquals(offset, found.offset(), what);
        assertEquals(timestamp, found.timestamp(), what);
    }

    @Test
    void committedOffsetIsWhereTheNextMemberResumes() throws Exception {
        String topic = topicWith("commit", 2, 40);
        String group = groupId();
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        Map<TopicPartition, Long> ends;
        try (KafkaConsumer<String, String> c = Clients.consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group)) {
            c.subscribe(List.of(topic));
            Clients.pollCount(c, 40);
            ends = c.endOffsets(List.of(p0, p1));
            assertTrue(ends.get(p0) > 3 && ends.get(p1) > 3, "both partitions need records: " + ends);
            c.commitSync(Map.of(p0, new OffsetAndMetadata(3, "meta-p0"), p1, new OffsetAndMetadata(ends.get(p1) - 1)));
            Map<TopicPartition, OffsetAndMetadata> committed = c.committed(Set.of(p0, p1));
            assertEquals(3, committed.get(p0).offset());
            assertEquals("meta-p0", committed.get(p0).metadata());
            assertEquals(ends.get(p1) - 1, committed.get(p1).offset());
            assertEquals("", committed.get(p1).metadata());
        }
        try (KafkaConsumer<String, String> c = Clients.consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, group)) {
            c.subscribe(List.of(topic));
            int expected = (int) (ends.get(p0) - 3 + 1);
            List<ConsumerRecord<String, String>> got = Clients.pollCount(c, expected);
            Map<Integer, Long> firstOffset = new HashMap<>();
            got.forEach(r -> firstOffset.merge(r.partition(), r.offset(), Math::min));
            assertEquals(Map.of(0, 3L, 1, ends.get(p1) - 1), firstOffset);
            assertEquals(expected, got.size());
            // commitSync() with no argument commits the positions.
            c.commitSync();
            Map<TopicPartition, OffsetAndMetadata> committed = c.committed(Set.of(p0, p1));
            assertEquals(ends.get(p0), committed.get(p0).offset());
            assertEquals(ends.get(p1), committed.get(p1).offset());
        }
    }

    @Test
    void autoOffsetResetLatestSkipsOldRecords() throws Exception {
        String topic = topicWith("latest", 1, 10);
        try (KafkaConsumer<String, String> c = Clients.consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, groupId(),
                ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "latest");
                KafkaProducer<String, String> producer = Clients.producer(broker)) {
            c.subscribe(List.of(topic));
            TopicPartition tp = new TopicPartition(topic, 0);
            Clients.waitFor(() -> {
                c.poll(Duration.ofMillis(100));
                return c.assignment().contains(tp);
            }, TIMEOUT, () -> "no assignment");
            assertEquals(10, c.position(tp));
            producer.send(new ProducerRecord<>(topic, "new", "new")).get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
            ConsumerRecord<String, String> r = Clients.pollCount(c, 1).get(0);
            assertEquals(10, r.offset());
            assertEquals("new", r.value());
        }
    }

    @Test
    void batchLargerThanMaxPartitionFetchBytesStillArrives() throws Exception {
        String topic = Clients.uniqueTopic("big");
        Clients.createTopic(broker, topic, 1);
        String big = "x".repeat(200_000);
        try (KafkaProducer<String, String> producer = Clients.producer(broker)) {
            Clients.sendAll(producer, List.of(new ProducerRecord<>(topic, "a", big), new ProducerRecord<>(topic, "b", big)));
        }
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaConsumer<String, String> c = Clients.consumer(broker, ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, 1024,
                ConsumerConfig.FETCH_MAX_BYTES_CONFIG, 2048)) {
            c.assign(List.of(tp));
            List<ConsumerRecord<String, String>> got = Clients.pollCount(c, 2);
            assertEquals(big, got.get(0).value());
            assertEquals(1, got.get(1).offset());
        }
    }

    @Test
    void longPollDeliversRecordsProducedWhileWaiting() throws Exception {
        String topic = Clients.uniqueTopic("tail");
        Clients.createTopic(broker, topic, 1);
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaConsumer<String, String> c = Clients.consumer(broker, ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, 10_000);
                KafkaProducer<String, String> producer = Clients.producer(broker)) {
            c.assign(List.of(tp));
            assertTrue(c.poll(Duration.ofMillis(300)).isEmpty());
            for (int i = 0; i < 5; i++) {
                producer.send(new ProducerRecord<>(topic, "k", "tail-" + i)).get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
                long sentAt = System.nanoTime();
                ConsumerRecord<String, String> r = Clients.pollCount(c, 1).get(0);
                long waitedMs = (System.nanoTime() - sentAt) / 1_000_000;
                assertEquals("tail-" + i, r.value());
                // A waiting fetch is answered when data arrives, not at max.wait.ms.
                assertTrue(waitedMs < 5000, "record reached the consumer after " + waitedMs + " ms");
            }
        }
    }
}
