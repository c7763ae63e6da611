import Uppy from '@uppy/core'; import Tus from '@uppy/tus'; window.Uppy = Uppy; window.UppyTus = Tus;
