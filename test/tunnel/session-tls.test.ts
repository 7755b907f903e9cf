import { transportPair } from '../helpers/transport-pair.js';
import { runSessionSuite } from './session-suite.js';

runSessionSuite('tls', transportPair('tls'));
