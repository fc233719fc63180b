/**
 * What 1:1 call clients need from the server besides the signal relay (`signal.config`). A plain
 * interface: the client package's declarations are built from it.
 */

/** One entry of `RTCConfiguration.iceServers`: a STUN or TURN server (TURN with its credentials). */
export interface IceServerDto {
  urls: string[];
  username?: string;
  credential?: string;
}

/** `signal.config`: what a call client puts in its `RTCConfiguration`. */
export interface SignalConfigDto {
  iceServers: IceServerDto[];
  /**
   * When the TURN credential minted for this caller stops being accepted (only when the server
   * mints them, RTC_TURN_URLS): ask `signal.config` again for a peer connection made after it.
   */
  expiresAt?: Date;
}
