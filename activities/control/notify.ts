/**
 * Delivering one event to one target, on the control host: a webhook POST signed with an HMAC
 * when the target names a secret's file, or an e-mail through the configured SMTP server. One
 * attempt per call: the delivery workflow's retry policy retries with backoff until its bound.
 * The secret is read here, at each attempt, and never leaves this process.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import { ApplicationFailure } from '@temporalio/common';
import { createTransport } from 'nodemailer';
import type { ImgflowEvent, NotifyTarget } from '../../common/events.js';
import type { NotifySettings } from '../../lib/config.js';

/** How long one attempt waits for the receiver. */
const ATTEMPT_TIMEOUT_MS = 20_000;

export const SIGNATURE_HEADER = 'x-imgflow-signature';

/** `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the time is signed so a captured request cannot be replayed later. */
export function signature(secret: string, body: string, seconds: number): string {
  const mac = crypto.createHmac('sha256', secret).update(`${seconds}.${body}`).digest('hex');
  return `t=${seconds},v1=${mac}`;
}

async function readSecret(file: string): Promise<string> {
  try {
    return (await fs.readFile(file, 'utf8')).replace(/\r?\n$/, '');
  } catch (err) {
    throw new Error(
      `the webhook's secret file ${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
}

async function postWebhook(target: { webhook: string; secretFile?: string }, event: ImgflowEvent): Promise<void> {
  const body = JSON.stringify(event);
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': 'imgflow',
    'x-imgflow-event': event.type,
    'x-imgflow-delivery': event.id,
  };
  if (target.secretFile)
    headers[SIGNATURE_HEADER] = signature(await readSecret(target.secretFile), body, Math.floor(Date.now() / 1000));
  // A redirect would send the signed request somewhere the rule does not name.
  const res = await fetch(target.webhook, {
    method: 'POST',
    headers,
    body,
    redirect: 'manual',
    signal: AbortSignal.timeout(ATTEMPT_TIMEOUT_MS),
  }).catch((err: unknown) => {
    const cause = (err as { cause?: { code?: string } }).cause?.code;
    throw new Error(`webhook ${target.webhook} unreachable: ${cause ?? (err as Error).message}`);
  });
  await res.body?.cancel();
  if (res.status < 200 || res.status > 299)
    throw new Error(`webhook ${target.webhook} answered ${res.status} ${res.statusText}`.trim());
}

function mailText(event: ImgflowEvent): { subject: string; text: string } {
  const about = event.image ?? event.volume ?? event.subscription ?? '';
  const subject = `[imgflow] ${event.type}${about ? ` ${about}` : ''}: ${event.detail}`.slice(0, 200);
  const text = `${event.type} by ${event.by} at ${event.at}\n\n${event.detail}\n\n${JSON.stringify(event, null, 2)}\n`;
  return { subject, text };
}

async function sendMail(settings: NotifySettings, to: string, event: ImgflowEvent): Promise<void> {
  if (!settings.smtp)
    throw ApplicationFailure.nonRetryable(
      'no SMTP server is configured on the control host (IMGFLOW_SMTP=host:port)',
      'NotConfigured',
    );
  const auth = settings.auth && { user: settings.auth.user, pass: await readSecret(settings.auth.passwordFile) };
  const transport = createTransport({
    host: settings.smtp.host,
    port: settings.smtp.port,
    ...(auth ? { auth } : {}),
    connectionTimeout: ATTEMPT_TIMEOUT_MS,
    socketTimeout: ATTEMPT_TIMEOUT_MS,
  });
  try {
    await transport.sendMail({
      from: settings.from,
      to,
      ...mailText(event),
      headers: { 'X-Imgflow-Event': event.type, 'X-Imgflow-Delivery': event.id },
    });
  } finally {
    transport.close();
  }
}

export function createNotifyActivities(deps: { settings: NotifySettings }) {
  return {
    async deliverEvent(input: { target: NotifyTarget; event: ImgflowEvent }): Promise<void> {
      if ('email' in input.target) await sendMail(deps.settings, input.target.email, input.event);
      else await postWebhook(input.target, input.event);
    },
  };
}

export type NotifyActivities = ReturnType<typeof createNotifyActivities>;
