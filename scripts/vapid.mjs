// Prints a VAPID key pair for web push (VAPID_PUBLIC_KEY, VAPID_PRIVATE_KEY): `npm run vapid`.
import webpush from 'web-push';

const { publicKey, privateKey } = webpush.generateVAPIDKeys();
console.log(`VAPID_PUBLIC_KEY=${publicKey}`);
console.log(`VAPID_PRIVATE_KEY=${privateKey}`);
console.log('VAPID_SUBJECT=mailto:ops@example.com  # your operator contact: a mailto: address or an https: URL');
