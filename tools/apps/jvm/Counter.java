import com.sun.net.httpserver.HttpServer;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A JVM with what makes one hard to checkpoint: many threads (16 workers, the HTTP pool, the
 * JIT and GC threads), JIT-compiled hot code and a heap-held map. GET / answers
 * {"count":N,"started":T,"entries":E,"sum":S}; `sum` is recomputed from the map on each
 * request, so a heap corrupted by a restore shows as a wrong sum (it must equal E*(E-1)/2).
 */
public final class Counter {
    private static final AtomicLong count = new AtomicLong();
    private static final Map<String, Long> heap = new HashMap<>();
    private static final double started = System.currentTimeMillis() / 1000.0;

    private static long hot(long seed) {
        // A loop the JIT compiles within seconds: restored code must keep running.
        long x = seed;
        for (int i = 0; i < 10_000; i++) {
            x = x * 6364136223846793005L + 1442695040888963407L;
        }
        return x;
    }

    public static void main(String[] args) throws Exception {
        for (long i = 0; i < 200_000; i++) {
            heap.put("key-" + i, i);
        }
        for (int t = 0; t < 16; t++) {
            Thread worker = new Thread(() -> {
                long x = 0;
                while (true) {
                    x ^= hot(x);
                    if (Thread.currentThread().getName().equals("worker-0")) {
                        count.incrementAndGet();
                    }
                    try {
                        Thread.sleep(100);
                    } catch (InterruptedException e) {
                        return;
                    }
                }
            }, "worker-" + t);
            worker.setDaemon(true);
            worker.start();
        }
        int port = args.length > 0 ? Integer.parseInt(args[0]) : 8080;
        HttpServer server = HttpServer.create(new InetSocketAddress(port), 0);
        server.setExecutor(Executors.newFixedThreadPool(4));
        server.createContext("/", exchange -> {
            long sum = 0;
            synchronized (heap) {
                for (long v : heap.values()) {
                    sum += v;
                }
            }
            String body = String.format(
                "{\"count\":%d,\"started\":%.3f,\"entries\":%d,\"sum\":%d}",
                count.get(), started, heap.size(), sum);
            byte[] data = body.getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("Content-Type", "application/json");
            exchange.sendResponseHeaders(200, data.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(data);
            }
        });
        server.start();
        System.out.println("serving on " + port);
    }
}
