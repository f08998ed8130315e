// Debian's Chromium, headless, with a WAV file as its microphone.
import { chromium } from 'playwright-core';

export async function launch(mic) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${mic}`, '--autoplay-policy=no-user-gesture-required',
    ],
  });
}
