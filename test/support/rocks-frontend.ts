/**
 * An AMQP client that behaves as a Rocks frontend's command launcher does: for each request a
 * fresh exclusive, auto-delete reply queue, a mandatory publish on a confirming channel to the
 * exchange with the host as routing key (no correlation id; its own app id, a message id, a
 * transient delivery), and the first message on the reply queue taken as the answer. An
 * unroutable request is an error, as it was for Rocks ("Message could not be delivered").
 * RabbitMQ not running is a failure, never a skip.
 */
import amqp, { type ChannelModel, type Options } from 'amqplib';

export const RABBITMQ_URL = 'amqp://guest:guest@127.0.0.1:5672';

export interface RocksReply {
  action: string;
  status: string;
  error?: string;
  bdev?: string;
  target?: string | null;
  node_type?: string;
  body?: Record<string, unknown>[] | Record<string, unknown> | string;
}

export class RocksFrontend {
  private nonce = 1;
  private constructor(readonly connection: ChannelModel) {}

  static async open(): Promise<RocksFrontend> {
    try {
      return new RocksFrontend(await amqp.connect(RABBITMQ_URL));
    } catch (err) {
      throw new Error(`RabbitMQ must run on 127.0.0.1:5672 for this test: ${(err as Error).message}`);
    }
  }

  private properties(replyTo: string, extra: Options.Publish = {}): Options.Publish {
    return {
      appId: 'rocks.RabbitMQClient',
      replyTo,
      messageId: String(this.nonce++),
      deliveryMode: 1,
      type: '',
      timestamp: Math.floor(Date.now() / 1000),
      mandatory: true,
      ...extra,
    };
  }

  /** Sends a request (an object as JSON, a string as is) and waits for the reply; `extra` adds publish properties (an expiration). */
  async send(
    exchange: string,
    host: string,
    request: object | string,
    extra: Options.Publish = {},
    timeoutMs = 90_000,
  ): Promise<RocksReply> {
    return (await this.post(exchange, host, request, extra, timeoutMs)).reply;
  }

  /** Publishes a request and returns once the broker has confirmed it (routed to a queue), with its reply to come. */
  async post(
    exchange: string,
    host: string,
    request: object | string,
    extra: Options.Publish = {},
    timeoutMs = 90_000,
  ): Promise<{ reply: Promise<RocksReply> }> {
    const body = Buffer.from(typeof request === 'string' ? request : JSON.stringify(request));
    const channel = await this.connection.createConfirmChannel();
    let timer: NodeJS.Timeout | undefined;
    const done = async () => {
      clearTimeout(timer);
      await channel.close().catch(() => undefined);
    };
    try {
      const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true });
      const reply = new Promise<RocksReply>((resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no reply to ${body.toString()} within ${timeoutMs} ms`)), timeoutMs);
        channel.on('return', () => reject(new Error(`no queue is bound to ${exchange} for ${host}`)));
        void channel.consume(queue, (msg) => msg && resolve(JSON.parse(msg.content.toString()) as RocksReply), {
          noAck: true,
        });
      });
      reply.catch(() => undefined);
      await new Promise<void>((resolve, reject) =>
        channel.publish(exchange, host, body, this.properties(queue, extra), (err) =>
          err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(),
        ),
      );
      return { reply: reply.finally(done) };
    } catch (err) {
      await done();
      throw err;
    }
  }

  /** Sends a request and gives up at once, as a frontend interrupted by its user: its reply queue is gone when this returns. */
  async sendAndGiveUp(exchange: string, host: string, request: object): Promise<void> {
    const channel = await this.connection.createConfirmChannel();
    const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true });
    const { consumerTag } = await channel.consume(queue, () => undefined, { noAck: true });
    await new Promise<void>((resolve, reject) =>
      channel.publish(exchange, host, Buffer.from(JSON.stringify(request)), this.properties(queue), (err) =>
        err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(),
      ),
    );
    await channel.cancel(consumerTag);
    await channel.close();
    if (await this.queueExists(queue)) throw new Error(`reply queue ${queue} outlived its sender`);
  }

  /** Publishes a request with a reply_to that names no queue (or none at all): nobody can be answered. */
  async sendUnanswerable(exchange: string, host: string, request: object, replyTo?: string): Promise<void> {
    const channel = await this.connection.createConfirmChannel();
    const props: Options.Publish = replyTo ? this.properties(replyTo) : { mandatory: true };
    await new Promise<void>((resolve, reject) =>
      channel.publish(exchange, host, Buffer.from(JSON.stringify(request)), props, (err) =>
        err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(),
      ),
    );
    await channel.close();
  }

  async queueExists(queue: string): Promise<boolean> {
    const channel = await this.connection.createChannel();
    channel.on('error', () => undefined);
    try {
      await channel.checkQueue(queue);
      await channel.close();
      return true;
    } catch (err) {
      // Another connection's exclusive queue exists too.
      return (err as { code?: number }).code === 405;
    }
  }

  async declareExchange(exchange: string, durable = false): Promise<void> {
    const channel = await this.connection.createChannel();
    await channel.assertExchange(exchange, 'direct', { durable });
    await channel.close();
  }

  /** Removes what a test declared; a shared name (the real exchange) is never passed here. */
  async remove(what: { queue?: string; exchange?: string }): Promise<void> {
    const channel = await this.connection.createChannel();
    channel.on('error', () => undefined);
    if (what.queue) await channel.deleteQueue(what.queue).catch(() => undefined);
    if (what.exchange) await channel.deleteExchange(what.exchange).catch(() => undefined);
    await channel.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.connection.close();
  }
}
