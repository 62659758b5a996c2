package dev.strand.it;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.time.Duration;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** One record through the Java producer (its defaults) and back through the consumer. */
class ProducerConsumerSmokeTest {
    static StrandBroker broker;

    @BeforeAll
    static void start() throws Exception {
        broker = StrandBroker.start();
    }

    @AfterAll
    static void stop() throws Exception {
        broker.close();
    }

    @Test
    void roundTripWithDefaults() throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        RecordMetadata md;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p, new StringSerializer(), new StringSerializer())) {
            md = producer.send(new ProducerRecord<>("smoke", "k", "v")).get();
        }
        assertEquals(0, md.offset());
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c, new StringDeserializer(), new StringDeserializer())) {
            TopicPartition tp = new TopicPartition("smoke", md.partition());
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            ConsumerRecords<String, String> got = ConsumerRecords.empty();
            long deadline = System.currentTimeMillis() + 15_000;
            while (got.isEmpty() && System.currentTimeMillis() < deadline) {
                got = consumer.poll(Duration.ofMillis(500));
            }
            assertEquals(1, got.count());
            assertEquals("v", got.iterator().next().value());
        }
    }
}
