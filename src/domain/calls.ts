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
