package dev.strand.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.InvalidRecordException;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * A compacted topic refuses a record without a key, as Kafka does (KIP-467): the Java producer's
 * send fails with InvalidRecordException carrying the per-record error; keyed records succeed.
 */
class CompactedTopicKeyTest {
    static final String TOPIC = "compacted-java";
    static StrandBroker broker;

    @BeforeAll
    static void start() throws Exception {
        broker = StrandBroker.start();
        Properties a = new Properties();
        a.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        try (Admin admin = Admin.create(a)) {
            NewTopic t = new NewTopic(TOPIC, 1, (short) 1).configs(Map.of("cleanup.policy", "compact"));
            admin.createTopics(List.of(t)).all().get();
        }
    }

    @AfterAll
    static void stop() throws Exception {
        broker.close();
    }

    @Test
    void keylessRecordIsRefusedAndKeyedRecordsSucceed() throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p, new StringSerializer(), new StringSerializer())) {
            long first = producer.send(new ProducerRecord<>(TOPIC, 0, "k1", "v1")).get().offset();
            ExecutionException e = assertThrows(ExecutionException.class,
                () -> producer.send(new ProducerRecord<>(TOPIC, 0, null, "no key")).get());
            assertInstanceOf(InvalidRecordException.class, e.getCause(), e.toString());
            String expected = "Compacted topic cannot accept message without key in topic partition " + TOPIC + "-0.";
            assertTrue(e.getCause().getMessage().contains(expected), e.getCause().getMessage());
            long next = producer.send(new ProducerRecord<>(TOPIC, 0, "k2", "v2")).get().offset();
            assertEquals(first + 1, next, "the refused record took no offset");
        }
    }
}
