package dev.strand.it;

import static dev.strand.it.Clients.TIMEOUT;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.stream.IntStream;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.utils.Utils;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * KafkaProducer against Strand: its defaults (idempotent, acks=all), every compression codec,
 * keyed / explicit / default partitioning, headers, and send callbacks whose offsets are where
 * the records are stored (checked by consuming them back).
 */
class ProducerTest {
    static StrandBroker broker;

    @BeforeAll
    static void start() throws Exception {
        broker = StrandBroker.start();
    }

    @AfterAll
    static void stop() throws Exception {
        broker.close();
    }

    /** Sends with callbacks; returns each record's metadata as the callback reported it. */
    private static List<RecordMetadata> sendWithCallbacks(KafkaProducer<String, String> producer,
            List<ProducerRecord<String, String>> records) throws Exception {
        RecordMetadata[] reported = new RecordMetadata[records.size()];
        List<Exception> errors = java.util.Collections.synchronizedList(new ArrayList<>());
        CountDownLatch done = new CountDownLatch(records.size());
        for (int i = 0; i < records.size(); i++) {
            int index = i;
            producer.send(records.get(i), (md, e) -> {
                reported[index] = md;
                if (e != null) {
                    errors.add(e);
                }
                done.countDown();
            });
        }
        assertTrue(done.await(TIMEOUT.toSeconds(), TimeUnit.SECONDS), "callbacks did not all fire");
        assertEquals(List.of(), errors);
        return List.of(reported);
    }

    /** Consumes every partition the records went to and checks each record at its reported offset. */
    private static void assertStoredAtReportedOffsets(List<ProducerRecord<String, String>> sent, List<RecordMetadata> reported) {
        Map<TopicPartition, Long> ends = new HashMap<>();
        for (RecordMetadata md : reported) {
            ends.merge(new TopicPartition(md.topic(), md.partition()), md.offset() + 1, Math::max);
        }
        Map<String, ConsumerRecord<String, String>> stored = new HashMap<>();
        for (var e : ends.entrySet()) {
            for (ConsumerRecord<String, String> r : Clients.readPartition(broker, e.getKey(), 0, e.getValue())) {
                stored.put(r.partition() + "@" + r.offset(), r);
            }
        }
        for (int i = 0; i < sent.size(); i++) {
            RecordMetadata md = reported.get(i);
            ConsumerRecord<String, String> r = stored.get(md.partition() + "@" + md.offset());
            assertTrue(r != null, "nothing stored at " + md);
            assertEquals(sent.get(i).key(), r.key());
            assertEquals(sent.get(i).value(), r.value());
        }
        assertEquals(sent.size(), stored.size(), "stored records other than those sent");
    }

    private static List<ProducerRecord<String, String>> records(String topic, int n) {
        return IntStream.range(0, n).mapToObj(i -> new ProducerRecord<>(topic, "key-" + i, "value-" + i + "-" + "x".repeat(i % 50)))
                .toList();
    }

    @Test
    void defaultsAreIdempotentAcksAllAndOffsetsMatchCallbacks() throws Exception {
        String topic = Clients.uniqueTopic("defaults");
        Clients.createTopic(broker, topic, 3);
        List<ProducerRecord<String, String>> sent = records(topic, 300);
        List<RecordMetadata> reported;
        try (KafkaProducer<String, String> producer = Clients.producer(broker)) {
            reported = sendWithCallbacks(producer, sent);
        }
        // Offsets per partition are 0..n-1, each once.
        Map<Integer, Set<Long>> perPartition = new HashMap<>();
        for (RecordMetadata md : reported) {
            assertTrue(perPartition.computeIfAbsent(md.partition(), p -> new HashSet<>()).add(md.offset()), "offset twice: " + md);
        }
        perPartition.forEach((p, offsets) -> assertEquals(offsets.size() - 1, offsets.stream().mapToLong(o -> o).max().orElseThrow(), "gap in partition " + p));
        assertStoredAtReportedOffsets(sent, reported);
        assertIdempotentBatch(new TopicPartition(topic, reported.get(0).partition()));
    }

    /**
     * The first batch stored in the partition carries a producer id and sequence 0, as an
     * idempotent producer writes it (read from the segment file: the client API hides them).
     */
    private static void assertIdempotentBatch(TopicPartition tp) throws Exception {
        Path segment = broker.dataDir().resolve(tp.topic() + "-" + tp.partition()).resolve("00000000000000000000.log");
        ByteBuffer header = ByteBuffer.wrap(Files.readAllBytes(segment), 0, 61).slice();
        assertEquals(0L, header.getLong(0), "base offset");
        assertEquals(2, header.get(16), "magic");
        long producerId = header.getLong(43);
        int baseSequence = header.getInt(53);
        assertTrue(producerId >= 0, "producer id " + producerId);
        assertEquals(0, baseSequence, "base sequence");
    }

    @ParameterizedTest
    @ValueSource(strings = {"none", "gzip", "snappy", "lz4", "zstd"})
    void everyCodecRoundTrips(String codec) throws Exception {
        String topic = Clients.uniqueTopic("codec-" + codec);
        Clients.createTopic(broker, topic, 2);
        List<ProducerRecord<String, String>> sent = records(topic, 500);
        List<RecordMetadata> reported;
        try (KafkaProducer<String, String> producer = Clients.producer(broker,
                ProducerConfig.COMPRESSION_TYPE_CONFIG, codec, ProducerConfig.LINGER_MS_CONFIG, 20)) {
            reported = sendWithCallbacks(producer, sent);
        }
        assertStoredAtReportedOffsets(sent, reported);
    }

    @Test
    void keyedRecordsLandOnTheMurmur2Partition() throws Exception {
        int partitions = 7;
        String topic = Clients.uniqueTopic("keyed");
        Clients.createTopic(broker, topic, partitions);
        List<ProducerRecord<String, String>> sent = records(topic, 200);
        List<RecordMetadata> reported;
        try (KafkaProducer<String, String> producer = Clients.producer(broker)) {
            reported = sendWithCallbacks(producer, sent);
        }
        Set<Integer> used = new HashSet<>();
        for (int i = 0; i < sent.size(); i++) {
            byte[] key = sent.get(i).key().getBytes(StandardCharsets.UTF_8);
            int expected = Utils.toPositive(Utils.murmur2(key)) % partitions;
            assertEquals(expected, reported.get(i).partition(), "key " + sent.get(i).key());
            used.add(expected);
        }
        assertEquals(partitions, used.size(), "200 keys should cover every partition");
        assertStoredAtReportedOffsets(sent, reported);
    }

    @Test
    void explicitPartitionIsHonoured() throws Exception {
        String topic = Clients.uniqueTopic("explicit");
        Clients.createTopic(broker, topic, 4);
        List<ProducerRecord<String, String>> sent = IntStream.range(0, 40)
                .mapToObj(i -> new ProducerRecord<>(topic, i % 4 == 0 ? null : i % 4, "k" + i, "v" + i)).toList();
        List<ProducerRecord<String, String>> explicit = sent.stream().filter(r -> r.partition() != null).toList();
        List<RecordMetadata> reported;
        try (KafkaProducer<String, String> producer = Clients.producer(broker)) {
            reported = sendWithCallbacks(producer, explicit);
        }
        for (int i = 0; i < explicit.size(); i++) {
            assertEquals(explicit.get(i).partition(), reported.get(i).partition());
        }
        assertStoredAtReportedOffsets(explicit, reported);
    }

    @Test
    void unkeyedRecordsSpreadOverPartitions() throws Exception {
        int partitions = 3;
        String topic = Clients.uniqueTopic("unkeyed");
        Clients.createTopic(broker, topic, partitions);
        List<ProducerRecord<String, String>> sent = new ArrayList<>();
        for (int i = 0; i < 3000; i++) {
            sent.add(new ProducerRecord<>(topic, null, "value-" + i + "-" + "y".repeat(200)));
        }
        List<RecordMetadata> reported;
        // Small batches: the built-in (sticky) partitioner moves on after each full batch.
        try (KafkaProducer<String, String> producer = Clients.producer(broker, ProducerConfig.BATCH_SIZE_CONFIG, 2048)) {
            reported = sendWithCallbacks(producer, sent);
        }
        Set<Integer> used = new HashSet<>();
        reported.forEach(md -> used.add(md.partition()));
        assertEquals(partitions, used.size(), "unkeyed records used partitions " + used);
        assertStoredAtReportedOffsets(sent, reported);
    }

    @Test
    void headersRoundTrip() throws Exception {
        String topic = Clients.uniqueTopic("headers");
        Clients.createTopic(broker, topic, 1);
        byte[] binary = new byte[256];
        for (int i = 0; i < binary.length; i++) {
            binary[i] = (byte) i;
        }
        RecordHeaders headers = new RecordHeaders();
        headers.add("trace", "abc".getBytes(StandardCharsets.UTF_8));
        headers.add("dup", "1".getBytes(StandardCharsets.UTF_8));
        headers.add("dup", "2".getBytes(StandardCharsets.UTF_8));
        headers.add("null-value", null);
        headers.add("empty", new byte[0]);
        headers.add("binary", binary);
        headers.add("ünïcode", "✓".getBytes(StandardCharsets.UTF_8));
        ProducerRecord<String, String> withHeaders = new ProducerRecord<>(topic, 0, "k", "v", headers);
        ProducerRecord<String, String> without = new ProducerRecord<>(topic, 0, "k2", "v2");
        RecordMetadata md;
        try (KafkaProducer<String, String> producer = Clients.producer(broker)) {
            md = producer.send(withHeaders).get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
            producer.send(without).get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
        }
        List<ConsumerRecord<String, String>> got = Clients.readPartition(broker, new TopicPartition(topic, 0), 0, 2);
        assertEquals(md.offset(), got.get(0).offset());
        Header[] back = got.get(0).headers().toArray();
        Header[] expected = headers.toArray();
        assertEquals(expected.length, back.length);
        for (int i = 0; i < expected.length; i++) {
            assertEquals(expected[i].key(), back[i].key());
            if (expected[i].value() == null) {
                assertNull(back[i].value(), "header " + expected[i].key());
            } else {
                assertArrayEquals(expected[i].value(), back[i].value(), "header " + expected[i].key());
            }
        }
        assertEquals(0, got.get(1).headers().toArray().length);
    }

    @Test
    void concurrentProducersGetDistinctOffsets() throws Exception {
        String topic = Clients.uniqueTopic("concurrent");
        Clients.createTopic(broker, topic, 1);
        Map<String, RecordMetadata> byValue = new ConcurrentHashMap<>();
        List<Thread> threads = new ArrayList<>();
        List<ProducerRecord<String, String>> all = new ArrayList<>();
        List<RecordMetadata> allReported = java.util.Collections.synchronizedList(new ArrayList<>());
        for (int t = 0; t < 3; t++) {
            List<ProducerRecord<String, String>> mine = new ArrayList<>();
            for (int i = 0; i < 200; i++) {
                mine.add(new ProducerRecord<>(topic, "p" + t, "p" + t + "-" + i));
            }
            all.addAll(mine);
            threads.add(new Thread(() -> {
                try (KafkaProducer<String, String> producer = Clients.producer(broker)) {
                    List<RecordMetadata> reported = sendWithCallbacks(producer, mine);
                    for (int i = 0; i < mine.size(); i++) {
                        byValue.put(mine.get(i).value(), reported.get(i));
                    }
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            }));
        }
        threads.forEach(Thread::start);
        for (Thread t : threads) {
            t.join(TIMEOUT.toMillis());
        }
        assertEquals(all.size(), byValue.size());
        all.forEach(r -> allReported.add(byValue.get(r.value())));
        assertStoredAtReportedOffsets(all, allReported);
    }
}
