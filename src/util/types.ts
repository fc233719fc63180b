/** `Omit` applied to each member of a union (keeps discriminated unions discriminated). */
export type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
